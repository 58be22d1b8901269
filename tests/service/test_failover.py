"""The pool's pre-ping (DB_POOL_PRE_PING, on by default) after a database restart, as in an RDS
failover: every pooled connection dies; with pre-ping the next request reconnects, without it
the request fails, answering 503 so that the client retries."""

from __future__ import annotations

import httpx
import pytest

from src.db.database import Database as ServiceDatabase
from src.main import create_app
from tests.support.helpers import PASSWORD, Server
from tests.support.service_helpers import migrate, new_database, run_async, settings_for


@pytest.mark.parametrize(("pre_ping", "after_restart"), [(True, 201), (False, 503)])
def test_a_pooled_connection_killed_by_a_restart_is_replaced_only_with_pre_ping(
    stopped_cluster, pre_ping, after_restart
):
    cluster = stopped_cluster
    cluster.start()
    server = Server(
        host="127.0.0.1",
        port=cluster.port,
        user="postgres",
        password=PASSWORD,
        admin_conninfo=cluster.conninfo(),
    )
    with new_database(server) as db:
        migrate(db)

        async def main() -> list[int]:
            database = ServiceDatabase(
                settings_for(db, pool_pre_ping=pre_ping, pool_size=1, pool_max_overflow=0)
            )
            transport = httpx.ASGITransport(app=create_app(database), raise_app_exceptions=False)
            call = {"user_id": "u", "phone_number": "+15550142"}
            try:
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://service"
                ) as client:
                    codes = [(await client.post("/calls", json=call)).status_code]
                    cluster.stop("fast")  # the server ends every session: the pooled one dies
                    cluster.start()
                    codes.append((await client.post("/calls", json=call)).status_code)
                    # either way the pool has replaced the dead connection by now
                    codes.append((await client.post("/calls", json=call)).status_code)
                    return codes
            finally:
                await database.dispose()

        assert run_async(main) == [201, after_restart, 201]
