from runner.cli.start import main

main()
