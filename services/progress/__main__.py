from services.progress.service import main

main()
