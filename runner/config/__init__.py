"""What the environment says: settings, the database URL, drivers, IAM tokens."""
