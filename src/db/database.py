"""The declarative base every model derives from.

Connection and session management for the application live here too in the service; the
migration runner needs only ``Base.metadata`` (through alembic/env.py).
"""

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass
