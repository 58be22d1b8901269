from src.db.calls.model import Call

__all__ = ["Call"]
