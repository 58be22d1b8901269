"""Verify and lint: the pre-merge checklist."""
