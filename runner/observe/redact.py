"""Redaction: what may leave the process. Pure.

Every string that leaves the process (log events, error messages, the console renderer's
lines, the usage message) is untrusted: it may quote a URL, a conninfo, a driver's repr of
its parameters, or another session's SQL. :func:`redact_text` masks the secrets the runner
knows (in every spelling a message may carry them: percent-encoded, ``repr()``- or
JSON-escaped) and anything shaped like a password. :func:`clip` is the only way to cut a
string: it redacts, cuts, and redacts again, so that a cut never exposes a secret's prefix
and never leaves a half pattern behind.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"

# A password inside a URL (scheme://user:PASSWORD@host): up to the last @ of the token, and
# through backslash-escaped quotes (a repr()'d URL).
_URL_PASSWORD = re.compile(
    r"(?P<head>[a-z0-9+.-]+://[^:/@\s'\"]*:)(?:\\.|[^\s'\"\\])*@", re.IGNORECASE
)
# key=value or key: value, the key anything ending in "password" (sslpassword,
# PGPASSWORD ...), quoted or not: a conninfo, a query string, a dict's repr, JSON.
_KV_PASSWORD = re.compile(
    r"(?P<head>\b\w*(?:password|passwd)['\"]?\s*[:=]\s*)"
    r"(?:'(?:\\.|[^'\\])*'?|\"(?:\\.|[^\"\\])*\"?|[^\s,;&)}\]]+)",
    re.IGNORECASE,
)
# SQL's PASSWORD '...' (ALTER/CREATE ROLE), also when the statement was cut inside it.
_SQL_PASSWORD = re.compile(r"(?P<head>\bPASSWORD\s+)'(?:[^']|'')*(?:'|$)", re.IGNORECASE)
# An RDS IAM auth token (a presigned URL): its signature and session token are the secret.
# Also percent-encoded once or twice (the token inside a URL: ``%3D`` for ``=``, ``%26`` for
# ``&``), as a token shows in a DSN or a driver's message.
_AWS_SIGNED = re.compile(
    r"(?P<head>X-Amz-(?:Signature|Security-Token|Credential)(?:=|%3D|%253D))"
    r"(?:(?!%26|%2526)[^&\s'\"])+",
    re.IGNORECASE,
)
#: secrets learnt while the process runs (an IAM auth token is made per connection)
_learnt: list[str] = []


def learn(secret: str) -> None:
    """Mask ``secret`` (every spelling) in everything logged from now on: for secrets made
    while the run goes on, such as an RDS IAM auth token."""
    if secret:
        _learnt[:] = sorted({*_learnt, *spellings(secret)}, key=len, reverse=True)


def learnt() -> list[str]:
    """The secrets :func:`learn` was given, every spelling, longest first."""
    return list(_learnt)


def spellings(secret: str) -> list[str]:
    """The ways ``secret`` can appear in a message: as is, percent-encoded (URLs, forms),
    ``repr()``/``ascii()``-escaped, JSON-escaped, as the repr of its UTF-8 bytes."""
    found = {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        repr(secret)[1:-1],
        ascii(secret)[1:-1],
        json.dumps(secret)[1:-1],
        repr(secret.encode())[2:-1],
    }
    return sorted((s for s in found if s), key=len, reverse=True)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every one of ``secrets`` (give them longest first) and anything shaped
    like a password masked."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, MASK)
    # the patterns only where they can match: most strings are revision ids and messages
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", text)
    lowered = text.lower()
    if "password" in lowered or "passwd" in lowered:
        text = _KV_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
        text = _SQL_PASSWORD.sub(lambda m: m.group("head") + "'" + MASK + "'", text)
    if "x-amz-" in lowered:
        text = _AWS_SIGNED.sub(lambda m: m.group("head") + MASK, text)
    return text


def _spans(text: str, secrets: Iterable[str], before: int) -> list[tuple[int, int]]:
    """Where each of ``secrets`` and each password-shaped match starting before ``before``
    lies in ``text``."""
    spans = []
    for secret in secrets:
        start = text.find(secret) if secret else -1
        while 0 <= start < before:
            spans.append((start, start + len(secret)))
            start = text.find(secret, start + 1)
    lowered = text.lower()
    patterns = [_URL_PASSWORD] if "://" in text else []
    if "password" in lowered or "passwd" in lowered:
        patterns += [_KV_PASSWORD, _SQL_PASSWORD]
    if "x-amz-" in lowered:
        patterns.append(_AWS_SIGNED)
    for pattern in patterns:
        spans += [m.span() for m in pattern.finditer(text, 0) if m.start() < before]
    return spans


def safe_cut(text: str, limit: int, secrets: Iterable[str] = ()) -> int:
    """Where to cut ``text`` (longer than ``limit``, and holding what follows the cut for
    at least the longest secret) so that each piece, redacted alone, is redacted as the whole
    would be: at ``limit``, or earlier, at the start of a secret or password-shaped match that
    would lie across the cut (unless it starts the text: then there is no earlier place)."""
    cut = limit
    for start, end in sorted(_spans(text, secrets, limit), reverse=True):
        if 0 < start < cut < end:
            cut = start
    return cut


def clip(text: str, limit: int, secrets: Iterable[str] = ()) -> str:
    """``text`` redacted, then cut to ``limit`` characters (marked with ``...``), then
    redacted again: the only safe order."""
    known = list(secrets)
    text = redact_text(text, known)
    if len(text) > limit:
        text = redact_text(text[: max(0, limit - 3)] + "...", known)
    return text
