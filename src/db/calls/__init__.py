from src.db.calls.model import Call
from src.db.calls.repository import CallRepository

__all__ = ["Call", "CallRepository"]
