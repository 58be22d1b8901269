"""What leaves the process: logs, console, redaction, CloudWatch, metrics, identity."""
