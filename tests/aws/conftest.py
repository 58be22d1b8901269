"""The AWS fixtures (moto on 127.0.0.1, or in process) for the tests in this folder."""

# fixtures are registered by being named in a conftest: these names are used by pytest, not here
from tests.support.aws import aws_in_process, aws_server, moto_server  # noqa: F401
