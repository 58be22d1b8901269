"""The verbs; each returns a Result and never picks an exit code."""
