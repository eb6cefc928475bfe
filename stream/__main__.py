from sluice.stream.cli import main

main()
