from runner.start import main

main()
