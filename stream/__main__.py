from sluice.stream.cli.main import main

main()
