"""IAM database authentication: tokens signed by botocore with fixed credentials, checked
against an independent SigV4 computation; SSL required; boto3 imported only when on."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import subprocess
import sys
from urllib.parse import parse_qsl, quote, urlsplit

import boto3
import pytest

from devtools.pgcluster import free_port
from runner.config.database_url import ConnectionSpec
from runner.config.iam_auth import TokenSource, iam_sslmode
from runner.config.settings import load_settings
from runner.database.connect import wait_for_database
from runner.errors import ConfigError, ConnectionRejected, DatabaseUnreachable
from runner.observe import logs
from tests.support.helpers import ROOT, run, runner_env

ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"  # the AWS documentation's example key


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """No credentials or region from this machine, and no instance-metadata lookups."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def fixed_session(region: str | None = "eu-west-1") -> boto3.session.Session:
    return boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=region
    )


def sigv4_signature(token: str, secret: str) -> str:
    """The signature an RDS IAM token must carry, computed here from SigV4's definition."""
    parts = urlsplit("//" + token)
    params = dict(parse_qsl(parts.query))
    signed = sorted((k, v) for k, v in params.items() if k != "X-Amz-Signature")
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in signed)
    canonical = "\n".join(
        ["GET", "/", query, f"host:{parts.netloc}", "", "host", hashlib.sha256(b"").hexdigest()]
    )
    scope = params["X-Amz-Credential"].split("/", 1)[1]
    date, region, service, _ = scope.split("/")
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            params["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_a_token_is_a_sigv4_presigned_connect_for_the_user_at_the_endpoint(aws_env: None) -> None:
    source = TokenSource(
        "db.cluster-abc.eu-west-1.rds.amazonaws.com", 5432, "migrator", session=fixed_session()
    )
    token = source()
    assert token.startswith(
        "db.cluster-abc.eu-west-1.rds.amazonaws.com:5432/?Action=connect&DBUser=migrator&"
    )
    params = dict(parse_qsl(urlsplit("//" + token).query))
    assert params["X-Amz-Expires"] == "900"  # 15 minutes: why each attempt makes its own
    assert params["X-Amz-Credential"].startswith(f"{ACCESS_KEY}/")
    assert params["X-Amz-Credential"].endswith("/eu-west-1/rds-db/aws4_request")
    assert params["X-Amz-Signature"] == sigv4_signature(token, SECRET_KEY)
    assert params["X-Amz-Signature"] != sigv4_signature(token, SECRET_KEY[:-1] + "X")


def test_each_call_makes_a_token_at_that_moment(aws_env: None) -> None:
    source = TokenSource("db.example.com", 5432, "migrator", session=fixed_session())
    made = datetime.datetime.strptime(
        dict(parse_qsl(source().split("?", 1)[1]))["X-Amz-Date"], "%Y%m%dT%H%M%SZ"
    ).replace(tzinfo=datetime.UTC)
    assert abs((datetime.datetime.now(datetime.UTC) - made).total_seconds()) < 5


def test_the_region_comes_from_boto3s_configuration_when_not_given(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-southeast-2")
    source = TokenSource(
        "db.example.com",
        5432,
        "migrator",
        session=boto3.session.Session(
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY
        ),
    )
    assert "%2Fap-southeast-2%2Frds-db%2F" in source()


def test_without_a_region_it_says_to_set_one(aws_env: None) -> None:
    with pytest.raises(ConfigError, match="AWS_REGION"):
        TokenSource("db.example.com", 5432, "migrator", session=fixed_session(region=None))


def test_without_credentials_it_says_to_give_the_task_a_role(aws_env: None) -> None:
    source = TokenSource("db.example.com", 5432, "migrator", region="eu-west-1")
    with pytest.raises(ConfigError, match="role allowed rds-db:connect") as err:
        source()
    assert "X-Amz" not in str(err.value)


def test_the_token_source_never_shows_a_token(aws_env: None) -> None:
    source = TokenSource("db.example.com", 5432, "migrator", session=fixed_session())
    token = source()
    assert token not in repr(source) and "X-Amz" not in repr(source)
    assert repr(source) == "TokenSource(migrator@db.example.com:5432, region=eu-west-1)"


@pytest.mark.parametrize(
    "sslmode, rootcert, expected",
    [
        (None, None, "require"),
        (None, "/certs/global-bundle.pem", "verify-full"),
        ("verify-ca", "/certs/global-bundle.pem", "verify-ca"),
        ("require", None, "require"),
    ],
)
def test_ssl_is_always_on(sslmode: str | None, rootcert: str | None, expected: str) -> None:
    assert iam_sslmode(sslmode, rootcert, password_given=False) == expected


@pytest.mark.parametrize("sslmode", ["disable", "allow", "prefer"])
def test_a_mode_that_allows_plain_text_is_refused(sslmode: str) -> None:
    with pytest.raises(ConfigError, match="needs SSL"):
        iam_sslmode(sslmode, None, password_given=False)


def test_a_password_given_as_well_is_refused() -> None:
    with pytest.raises(ConfigError, match="remove the password"):
        iam_sslmode("require", None, password_given=True)


def test_a_token_in_a_log_line_is_masked(aws_env: None) -> None:
    token = TokenSource("db.example.com", 5432, "migrator", session=fixed_session())()
    masked = logs.redact_text(f"connection to {token} failed", [])
    signature = dict(parse_qsl(token.split("?", 1)[1]))["X-Amz-Signature"]
    assert signature not in masked and ACCESS_KEY not in masked
    assert "X-Amz-Signature=***" in masked


def test_a_token_in_any_spelling_is_masked_in_every_event(aws_env: None) -> None:
    """Found by issue 21: the access key id, session token and signature reached
    ``revision.output`` and ``error`` (the token was never a masked secret, and its
    percent-encoded form was not recognised)."""
    token = TokenSource("db.example.com", 5432, "migrator", session=fixed_session())()
    signature = dict(parse_qsl(token.split("?", 1)[1]))["X-Amz-Signature"]
    process = logs.redactor([])
    for spelling in (token, quote(token, safe=""), quote(quote(token, safe=""), safe="")):
        event = process(None, "info", {"event": "revision.output", "text": f"dsn={spelling}"})
        assert signature not in event["text"] and ACCESS_KEY not in event["text"], spelling
    partial = f"password=...X-Amz-Signature%3D{signature}%26next"
    assert signature not in logs.redact_text(partial, [])


def test_boto3_is_not_imported_unless_iam_authentication_is_on() -> None:
    code = (
        "import sys, runner.config.iam_auth, runner.cli.main; "
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# --- wired in: the settings, the wait for the database, a real run -------------------------


@pytest.fixture
def iam_env(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fixed credentials and region in the environment, as ECS's task role would give."""
    values = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": "eu-west-1",
        "MIGRATION_IAM_AUTH": "true",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def test_with_iam_the_settings_give_a_token_as_every_connections_password(
    iam_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "DB_HOST": "db.example.com",
        "DB_NAME": "app",
        "DB_USER": "migrator",
    }.items():
        monkeypatch.setenv(name, value)
    spec = load_settings().connection_spec()
    assert spec.sslmode == "require" and spec.password is None
    password = spec.libpq_params()["password"]
    assert str(password).startswith("db.example.com:5432/?Action=connect&DBUser=migrator&")
    assert "%2Feu-west-1%2Frds-db%2F" in str(password)
    assert "X-Amz" not in repr(spec) and "X-Amz" not in spec.redacted()


def test_with_iam_a_password_in_the_settings_is_refused(
    iam_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://migrator:pw@db.example.com/app")
    with pytest.raises(ConfigError, match="remove the password"):
        load_settings().connection_spec()


def test_each_connection_attempt_gets_a_new_password() -> None:
    made: list[int] = []
    spec = ConnectionSpec(
        host="127.0.0.1",
        port=free_port(),
        dbname="app",
        user="migrator",
        password_source=lambda: str(made.append(1) or len(made)),
    )
    with pytest.raises(DatabaseUnreachable) as err:
        wait_for_database(
            spec,
            budget_s=1.0,
            connect_timeout_s=2,
            max_interval_s=0.2,
            application_name="test",
            log=logs.get(),
        )
    assert err.value.fields["attempts"] >= 2
    assert len(made) == err.value.fields["attempts"]


def test_a_run_with_iam_never_shows_the_token(iam_env: dict[str, str], database) -> None:
    """The test server has no SSL: the run is refused (SSL is required), token unseen."""
    env = runner_env(
        None,
        DB_HOST=database.server.host,
        DB_PORT=database.server.port,
        DB_NAME=database.name,
        DB_USER=database.server.user,
        MIGRATION_DB_WAIT_TIMEOUT=0,
        **iam_env,
    )
    result = run(env, "upgrade")
    assert result.code == 4, result.stdout + result.stderr
    assert result.event("error")["error_kind"] == "ssl_config"
    everything = result.stdout + result.stderr
    assert "X-Amz-Signature" not in everything and SECRET_KEY not in everything
    assert f"{ACCESS_KEY}%2F" not in everything


@pytest.mark.parametrize("iam", [False, True], ids=["password", "iam-token"])
def test_a_refused_token_points_at_iam_not_at_a_password(database, iam: bool) -> None:
    """A wrong password is a wrong password; a refused IAM token is a grant or policy."""
    server = database.server
    spec = ConnectionSpec(
        host=server.host,
        port=server.port,
        dbname=database.name,
        user=server.user,
        password=None if iam else "wrong",
        password_source=(lambda: "wrong-token") if iam else None,
    )
    with pytest.raises(ConnectionRejected) as err:
        wait_for_database(
            spec,
            budget_s=5.0,
            connect_timeout_s=2,
            max_interval_s=0.2,
            application_name="test",
            log=logs.get(),
        )
    assert ("rds_iam" in err.value.message) is iam
    assert ("DB_PASSWORD" in err.value.message) is not iam
    assert "wrong" not in err.value.message
