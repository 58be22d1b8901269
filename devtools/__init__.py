"""Development-only tools: the throwaway PostgreSQL cluster and the ``demo`` command.

Never part of the runtime package or image (the wheel ships ``runner`` only); the ``demo``
command imports this from a checkout of the repository.
"""
