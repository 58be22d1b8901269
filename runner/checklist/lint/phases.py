"""The lint findings graded by the revision's phase (``migration_runner = {"phase": ...}``,
see docs/zero-downtime.md). Pure.

An expand revision runs while the previous release still serves traffic, so taking away what
that release uses (dropping a table or column, ``SET NOT NULL``) is an error whose fix is to
mark the revision contract: it then runs only once the new release is live. In a contract
revision the same change is what the guide's last step does: reported as information.
Renames and type changes break the release on either side of them, so they stay errors in
both phases (add, copy, switch, drop)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

#: the rules whose change is safe once the new code is live
CONTRACT_SAFE = ("drop-table", "drop-column", "set-not-null")
MARK_CONTRACT = (
    'mark it contract (migration_runner = {"phase": "contract"}) so that it runs only '
    "after the new code is live (upgrade --phase contract)"
)

F = TypeVar("F", bound=Any)  # a lint Finding (a frozen dataclass)


def by_phase(finding: F, phase: str) -> F:
    """``finding`` (a :class:`~runner.checklist.lint.Finding`) as it counts in a revision
    of ``phase``."""
    if finding.rule not in CONTRACT_SAFE:
        return finding
    if phase == "contract":
        return dataclasses.replace(
            finding,
            level="info",
            message=f"{finding.message} (a contract revision: runs after the new code is live)",
        )
    return dataclasses.replace(finding, level="error", fix=f"{MARK_CONTRACT}; or {finding.fix}")
