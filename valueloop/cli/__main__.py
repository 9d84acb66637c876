from valueloop.cli import main

main()
