from services.tile.service import main

main()
