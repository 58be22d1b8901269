"""The command line: argv to one verb to an exit code and the run's last words."""
