"""Acknowledgements: a revision says, with a reason, that a finding is intended.

In the revision file, anywhere (usually above the statement)::

    # migration-runner: allow drop-column -- the app stopped reading calls.legacy in 2.3

names one or more rules (comma-separated) and, after ``--``, the reason. An acknowledged
finding is reported with its reason but is not an error. A marker without a reason
acknowledges nothing (and says so).
"""

from __future__ import annotations

import dataclasses
import re

MARKER = re.compile(
    r"#\s*migration-runner:\s*allow\s+(?P<rules>[\w\-, ]+?)\s*(?:--\s*(?P<reason>.*\S))?\s*$"
)


@dataclasses.dataclass(frozen=True)
class Acks:
    reasons: dict[str, str]  # rule -> reason
    invalid: tuple[int, ...] = ()  # lines of markers without a reason


def read_acks(source: str) -> Acks:
    """The acknowledgements in a revision file's source. Pure."""
    reasons: dict[str, str] = {}
    invalid = []
    for number, line in enumerate(source.splitlines(), start=1):
        found = MARKER.search(line)
        if not found:
            continue
        if not found.group("reason"):
            invalid.append(number)
            continue
        for rule in found.group("rules").split(","):
            if rule.strip():
                reasons[rule.strip()] = found.group("reason")
    return Acks(reasons, tuple(invalid))
