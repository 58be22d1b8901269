"""The service's tests live beside its code (src/db/calls/test_repository.py, as the team's
guide lays them out) and use the same real-PostgreSQL fixtures as tests/."""

from tests.conftest import database, server, template_cluster  # noqa: F401
from tests.support.service_helpers import migrated_database, migrated_template  # noqa: F401
