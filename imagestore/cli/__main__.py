from imagestore.cli import main

main()
