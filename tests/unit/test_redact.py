"""Redaction (pure): known secrets in every spelling, password shapes, and cutting only
after redacting."""

from __future__ import annotations

import json

import pytest

from runner.observe.redact import clip, redact_text, safe_cut, spellings

PW = "it's-a-s3cr@t:/%#?pw-🔑"


@pytest.mark.parametrize(
    "text, leak",
    [
        ("could not parse postgresql://app:TopSecret@host/db", "TopSecret"),
        ("invalid dsn: host=h password=TopSecret dbname=d", "TopSecret"),
        ("invalid dsn: password='Top Secret' host=h", "Top Secret"),
        ("ALTER ROLE app PASSWORD 'TopSecret'", "TopSecret"),
        ("ALTER ROLE app PASSWORD 'TopSecretCutByTrackActivityQuerySi", "TopSecret"),
        ("postgresql://u:h?sslpassword=TopSecret&sslmode=require", "TopSecret"),
        ("{'host': 'h', 'password': 'TopSecret', 'port': 5432}", "TopSecret"),
        ('{"password": "Top\\"Secret"}', "Secret"),
        ("URL('postgresql+psycopg://app:Top@Secret@host/db')", "Secret"),
        ("'postgresql://app:Top\\'Secret@host/db'", "Secret"),
        ("PGPASSWORD=TopSecret psql", "TopSecret"),
    ],
)
def test_password_shapes_are_masked_even_when_unknown(text, leak):
    redacted = redact_text(text, [])
    assert leak not in redacted and "***" in redacted


@pytest.mark.parametrize(
    "render",
    [
        str,
        repr,
        ascii,
        json.dumps,
        lambda s: repr(s.encode()),
        lambda s: __import__("urllib.parse").parse.quote(s, safe=""),
    ],
)
def test_a_known_secret_is_masked_in_every_spelling(render):
    text = f"connection failed for {render(PW)} (detail)"
    known = sorted(spellings(PW), key=len, reverse=True)
    redacted = redact_text(text, known)
    assert "s3cr" not in redacted and "***" in redacted


def test_a_cut_never_leaves_a_secrets_prefix():
    text = "x" * 485 + PW + " tail"
    known = spellings(PW)
    assert "s3cr" in text[:500] and PW not in text[:500]  # what cutting first would have shown
    clipped = clip(text, 500, known)
    assert "s3cr" not in clipped and len(clipped) <= 500


def test_a_cut_inside_a_password_literal_masks_the_rest():
    query = "ALTER ROLE app PASSWORD '" + "Z" * 100 + "'"
    clipped = clip(query, 60)
    assert "ZZ" not in clipped and "PASSWORD '***'" in clipped


def test_ordinary_text_is_left_alone_and_short_text_not_cut():
    assert clip("revision a1 applied", 60) == "revision a1 applied"
    assert redact_text("postgresql://h/db has no user", []) == "postgresql://h/db has no user"


@pytest.mark.parametrize("at", [0, 3, 5, 8])
def test_a_cut_is_never_across_a_secret_nor_a_password_shaped_value(at):
    secret = "s3cr3t-pw"
    text = "x" * (10 - at) + secret + "y" * 20
    cut = safe_cut(text, 10, [secret])
    assert cut == (10 if at == 0 else 10 - at)  # at the limit, or where the secret starts
    for shaped in ("password=hunter22 tail", "postgres://u:hunter22@host/db"):
        text = "xxxx " + shaped
        assert safe_cut(text, 12) == 5
    assert safe_cut("password=" + "v" * 30, 12) == 12  # starting the text: nowhere earlier
