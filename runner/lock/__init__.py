"""The migration lock, whole: the advisory lock, holding it, the guard, pooler and same-database checks."""
