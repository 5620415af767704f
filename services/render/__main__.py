from services.render.service import main

main()
