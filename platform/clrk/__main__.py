from clrk.cli import main

main()
