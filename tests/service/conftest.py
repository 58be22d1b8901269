"""The service's databases (migrated once per session, copied per module or per test)."""

# fixtures are registered by being named in a conftest: these names are used by pytest, not here
from tests.support.service_helpers import (  # noqa: F401
    fresh_migrated_database,
    migrated_database,
    migrated_template,
)
