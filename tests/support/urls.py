"""The one database-URL builder of the tests (every ``url()`` helper delegates here)."""

from __future__ import annotations

from urllib.parse import quote


def pg_url(
    user: str,
    password: str | None,
    host: str,
    port: int | str,
    dbname: str,
    *,
    scheme: str = "postgresql+psycopg",
    query: str = "",
    encode: bool = True,
) -> str:
    """``scheme://user:password@host:port/dbname[?query]``, percent-encoded unless
    ``encode=False`` (for tests of what a badly pasted URL does). It holds the password."""

    def enc(text: str) -> str:
        return quote(text, safe="") if encode else text

    auth = enc(user) + (f":{enc(password)}" if password is not None else "")
    return f"{scheme}://{auth}@{host}:{port}/{enc(dbname)}" + (f"?{query}" if query else "")
