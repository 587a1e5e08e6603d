from srpl_cli.cli import main

main()
