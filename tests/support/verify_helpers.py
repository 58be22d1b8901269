"""A throwaway Alembic project for the verify and lint tests: env.py runs online on the
connection it is given or offline (lint renders SQL), and compares with ``models.py`` when the
test writes one (``metadata = ...``)."""

from __future__ import annotations

from devtools.projects import VERIFY_ENV_PY as ENV_PY
from devtools.projects import History

__all__ = ["ENV_PY", "History"]
