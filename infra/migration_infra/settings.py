"""The stack's settings: Pulumi config in, one validated `StackSettings` out.

`parse_settings` is pure (a mapping of config keys to values, as `Pulumi.<stack>.yaml` holds
them) and raises `SettingsError` naming every key to fix at once; `load_settings` is the edge
that reads the stack's config.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any, Mapping

from migration_infra.containers import MAX_STOP_TIMEOUT_S, MIN_STOP_TIMEOUT_S, STOP_TIMEOUT_RANGE
from migration_infra.images import ImageError, ImageRef, is_digest, parse_image

CONFIG_NAMESPACE = "migration-runner"

# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096,
                      1827, 2192, 2557, 2922, 3288, 3653)

# Fargate's CPU units and the memory (MiB) each accepts, up to 4 vCPU: a migration needs little.
FARGATE_MEMORY = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
}

SNAPSHOT_KINDS = ("off", "instance", "cluster")

# An RDS endpoint: <identifier>.<random>.<region>.rds.amazonaws.com; an Aurora cluster's:
# <identifier>.cluster-<random>.<region>... (the runner reads MIGRATION_SNAPSHOT_IDENTIFIER
# from DB_HOST the same way).
_RDS_ENDPOINT = re.compile(r"^(?P<id>[a-z][a-z0-9-]*)\.(?:cluster-(?:ro-)?)?[a-z0-9]+"
                           r"\.[a-z0-9-]+\.rds\.amazonaws\.com(?:\.cn)?$")

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class SettingsError(ValueError):
    """The stack config is incomplete or contradictory; the message lists every key to fix."""


@dataclass(frozen=True)
class AppSettings:
    """The example app service (the FastAPI server) deployed behind the gate."""

    image: str
    container_port: int = 8080
    desired_count: int = 2
    cpu: int = 512
    memory: int = 1024
    init_container: bool = False
    db_secret_arn: str | None = None   # the app's own credentials; None: the stack's dbSecretArn
    security_group_id: str | None = None  # the app's group; None: the stack's securityGroupId
    health_check_path: str = "/healthz"


@dataclass(frozen=True)
class StackSettings:
    service: str
    environment: str
    subnet_ids: tuple[str, ...]
    security_group_id: str | None      # the task's existing group; None: created in vpc_id
    db_host: str
    db_name: str
    db_port: int = 5432
    vpc_id: str | None = None
    database_rules: bool = True            # add the database port rules to the groups
    db_secret_arn: str | None = None
    db_secret_kms_key_arn: str | None = None
    db_security_group_id: str | None = None
    db_ssl_mode: str = "verify-full"
    iam_auth: bool = False
    db_user: str | None = None
    db_resource_id: str | None = None
    image: ImageRef | None = None          # an existing image, pinned by digest
    image_digest: str | None = None        # pushed to the repository created here; None: not yet
    repository_name: str = "migration-runner"
    repository_only: bool = False          # the first `up`: the repository alone, no image yet
    cluster_name: str | None = None        # an existing cluster; None: create one
    assign_public_ip: bool = False
    log_retention_days: int = 30
    cpu: int = 256
    memory: int = 512
    cpu_architecture: str = "X86_64"
    stop_timeout: int = 30
    task_timeout: int = 1800
    alarm_topic_arn: str | None = None
    allow_database_ahead: bool = False     # a rollback deploy: an older image, a newer schema
    migrations_dir: str = "../alembic/versions"
    launcher: str = "migration-runner"
    app: AppSettings | None = None
    # Two gates (docs/zero-downtime.md): `upgrade --phase expand` before the app's service
    # update, `upgrade --phase contract` once the service is stable on the new code.
    phases: bool = False
    snapshot: str = "off"                  # MIGRATION_SNAPSHOT: off, instance or cluster
    snapshot_identifier: str | None = None  # the DB instance/cluster; with snapshot on, set
    snapshot_timeout: int | None = None    # MIGRATION_SNAPSHOT_TIMEOUT; None: the runner's
    # The stack's AWS identity (its `aws:` provider config) for the gate's launcher, as
    # environment variables: AWS_PROFILE, MIGRATION_ECS_ROLE_ARN, ...
    launcher_identity: tuple[tuple[str, str], ...] = ()

    @property
    def creates_repository(self) -> bool:
        return self.image is None


_BOOL = {"true": True, "false": False}


def _bool(raw: Mapping[str, Any], key: str, default: bool, problems: list[str]) -> bool:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if str(value).lower() in _BOOL:
        return _BOOL[str(value).lower()]
    problems.append(f"{key}: expected true or false, got {value!r}")
    return default


def _int(raw: Mapping[str, Any], key: str, default: int, problems: list[str]) -> int:
    value = raw.get(key)
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        problems.append(f"{key}: expected a whole number, got {value!r}")
        return default


def _str(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None or str(value).strip() == "":
        return None
    return str(value).strip()


def _list(raw: Mapping[str, Any], key: str, problems: list[str]) -> tuple[str, ...]:
    value = raw.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.lstrip().startswith("[") else value.split(",")
        except json.JSONDecodeError:
            problems.append(f"{key}: expected a list, got {value!r}")
            return ()
    if not isinstance(value, (list, tuple)):
        problems.append(f"{key}: expected a list, got {value!r}")
        return ()
    return tuple(str(item).strip() for item in value if str(item).strip())


def _app(raw: Mapping[str, Any], problems: list[str]) -> AppSettings | None:
    value = raw.get("app")
    if value is None:
        return None
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping):
        problems.append("app: expected an object, e.g. {containerPort: 8080}")
        return None
    if not _str(value, "image"):
        problems.append("app.image: required: the app's image pinned by digest, as CI passes it "
                        "(--config-path --config migration-runner:app.image=REPO@sha256:...); "
                        "`pulumi stack output appImage` shows the one deployed now. Without "
                        "it this `up` would roll the app back to whatever the stack file holds")
        return None
    try:
        parse_image(_str(value, "image") or "")
    except ImageError as exc:
        problems.append(f"app.image: {exc}")
    app = AppSettings(
        image=_str(value, "image") or "",
        container_port=_int(value, "containerPort", 8080, problems),
        desired_count=_int(value, "desiredCount", 2, problems),
        cpu=_int(value, "cpu", 512, problems),
        memory=_int(value, "memory", 1024, problems),
        init_container=_bool(value, "initContainer", False, problems),
        db_secret_arn=_str(value, "dbSecretArn") or _str(raw, "dbSecretArn"),
        health_check_path=_str(value, "healthCheckPath") or "/healthz",
        security_group_id=_str(value, "securityGroupId") or _str(raw, "securityGroupId"),
    )
    if app.security_group_id is None:
        problems.append("app.securityGroupId: required when the task's group is created here "
                        "(vpcId): the app's own security group")
    if app.db_secret_arn is None:
        problems.append("app.dbSecretArn: required with iamAuth and no dbSecretArn: the app "
                        "connects with a password from a secret (it has no IAM authentication)")
    if not app.health_check_path.startswith("/"):
        problems.append(f"app.healthCheckPath: a path such as /healthz, "
                        f"got {app.health_check_path!r}")
    if app.memory not in FARGATE_MEMORY.get(app.cpu, ()):
        problems.append(f"app.cpu/app.memory: {app.cpu}/{app.memory} is not a Fargate size")
    return app


def _task_group(raw: Mapping[str, Any]) -> list[str]:
    """The task's security group: an existing one, or one created in the VPC."""
    given, vpc = _str(raw, "securityGroupId"), _str(raw, "vpcId")
    if given and vpc:
        return ["securityGroupId, vpcId: give one: the task's existing group, or the VPC to "
                "create the task's own group in"]
    if not given and not vpc:
        return ["securityGroupId: required (the task's security group), or vpcId to create "
                "the task's own group there (egress HTTPS and the database port only)"]
    if vpc and str(raw.get("databaseRules", "true")).lower() == "false":
        return ["databaseRules: a group created here has no rule to reach the database yet"]
    return []


def _image_presence(raw: Mapping[str, Any], image_digest: str | None) -> list[str]:
    """Without an image every resource but the repository would leave the program, and
    `pulumi up` would delete them: only an explicit `repositoryOnly` (the first `up`) may."""
    repository_only = str(raw.get("repositoryOnly", "")).lower() == "true"
    has_image = _str(raw, "image") is not None or image_digest is not None
    if repository_only and has_image:
        return ["repositoryOnly: only for the first `up`, before any image exists; remove it "
                "(an image or imageDigest is given)"]
    if not repository_only and not has_image:
        return ["imageDigest: required: the digest of the runner's image in the repository "
                "(`pulumi stack output imageDigest` shows the one deployed now). Without it "
                "this `up` would delete the task, the gate and the app. Only for the very "
                "first `up`, before any image exists, set repositoryOnly: true"]
    return []


def rds_identifier(host: str) -> str | None:
    """The DB instance or cluster identifier an RDS endpoint names, else None."""
    found = _RDS_ENDPOINT.match(host.lower())
    return found.group("id") if found else None


def _snapshot(raw: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """`snapshot`, `snapshotIdentifier` (default: read from an RDS endpoint in `dbHost`) and
    `snapshotTimeout`, as `StackSettings` fields."""
    kind = (_str(raw, "snapshot") or "off").lower()
    if kind not in SNAPSHOT_KINDS:
        problems.append(f"snapshot: one of {', '.join(SNAPSHOT_KINDS)}, got {kind!r}")
        kind = "off"
    timeout = (_int(raw, "snapshotTimeout", 0, problems)
               if raw.get("snapshotTimeout") is not None else None)
    if timeout is not None and timeout <= 0:
        problems.append(f"snapshotTimeout: seconds, more than 0, got {timeout}")
    if kind == "off":
        return {"snapshot": "off", "snapshot_identifier": None, "snapshot_timeout": None}
    identifier = (_str(raw, "snapshotIdentifier") or rds_identifier(_str(raw, "dbHost") or "")
                  or "").lower()
    if not identifier:
        problems.append(f"snapshotIdentifier: required with snapshot: {kind} (the DB "
                        f"{'cluster' if kind == 'cluster' else 'instance'} identifier): "
                        f"dbHost is not an RDS endpoint it could be read from")
    elif not re.fullmatch(r"[a-z][a-z0-9-]{0,62}", identifier):
        problems.append(f"snapshotIdentifier: an RDS identifier (a letter, then letters, "
                        f"digits, hyphens; at most 63), got {identifier!r}")
    return {"snapshot": kind, "snapshot_identifier": identifier or None,
            "snapshot_timeout": timeout}


def _zero_downtime_problems(settings: StackSettings) -> list[str]:
    problems = []
    if settings.phases and settings.app is None:
        problems.append("phases: needs `app`: the contract gate runs once the app's service is "
                        "stable on the new code (without the service here, run "
                        "`upgrade --phase contract` from the deploy that updates it)")
    budget = settings.snapshot_timeout or 1800  # the runner's MIGRATION_SNAPSHOT_TIMEOUT
    if settings.snapshot != "off" and budget >= settings.task_timeout:
        problems.append(f"taskTimeout: {settings.task_timeout} s leaves no time to migrate after "
                        f"a snapshot that may take {budget} s (snapshotTimeout, default 1800): "
                        f"raise taskTimeout past the snapshot plus the migrations (backfills "
                        f"included), or lower snapshotTimeout")
    return problems


def launcher_identity(aws: Mapping[str, Any], problems: list[str]) -> tuple[tuple[str, str], ...]:
    """The environment that gives the gate's launcher the identity the stack's `aws` provider
    has (pulumi-command runs it with the machine's environment, not the provider's config):
    `aws:profile` as AWS_PROFILE, `aws:assumeRole` (or one `aws:assumeRoles` entry) as
    MIGRATION_ECS_ROLE_ARN, _EXTERNAL_ID, _SESSION_NAME. A chain of roles is refused."""
    env: dict[str, str] = {}
    if _str(aws, "profile"):
        env["AWS_PROFILE"] = _str(aws, "profile") or ""
    roles = aws.get("assumeRoles")
    roles = json.loads(roles) if isinstance(roles, str) else roles
    role = aws.get("assumeRole")
    role = json.loads(role) if isinstance(role, str) else role
    if roles and len(roles) > 1:
        problems.append("aws:assumeRoles: the gate's launcher assumes one role; give the last "
                        "role of the chain through a profile (aws:profile) instead")
    role = role or (roles[0] if roles else None)
    if isinstance(role, Mapping) and _str(role, "roleArn"):
        env["MIGRATION_ECS_ROLE_ARN"] = _str(role, "roleArn") or ""
        for key, name in (("externalId", "EXTERNAL_ID"), ("sessionName", "SESSION_NAME")):
            if _str(role, key):
                env[f"MIGRATION_ECS_ROLE_{name}"] = _str(role, key) or ""
    return tuple(sorted(env.items()))


def parse_settings(raw: Mapping[str, Any], *, stack: str,
                   aws: Mapping[str, Any] | None = None) -> StackSettings:
    """Validate the stack config (`raw`: keys without the namespace) into `StackSettings`.

    Raises `SettingsError` listing every problem, so one `pulumi up` names all of them.
    `stack` is the default `environment` (the metric dimension and name suffix); `aws` is the
    stack's `aws:` provider config (keys without the namespace), for `launcher_identity`.
    """
    problems: list[str] = [f"{key}: unknown setting (known: {', '.join(KEYS)})"
                           for key in raw if key not in KEYS]
    required = ("service", "dbHost", "dbName")
    for key in required:
        if _str(raw, key) is None:
            problems.append(f"{key}: required")
    subnet_ids = _list(raw, "subnetIds", problems)
    if not subnet_ids:
        problems.append("subnetIds: required (the private subnets the task runs in)")

    iam_auth = _bool(raw, "iamAuth", False, problems)
    db_secret_arn = _str(raw, "dbSecretArn")
    if db_secret_arn is None and not iam_auth:
        problems.append("dbSecretArn: required (the Secrets Manager secret with the database "
                        "credentials), unless iamAuth is true")
    if iam_auth:
        for key in ("dbUser", "dbResourceId"):
            if _str(raw, key) is None:
                problems.append(f"{key}: required when iamAuth is true")

    image: ImageRef | None = None
    image_digest = _str(raw, "imageDigest")
    if _str(raw, "image") is not None:
        if image_digest is not None:
            problems.append("image, imageDigest: give one: an existing image pinned by digest, "
                            "or the digest pushed to the repository created here")
        try:
            image = parse_image(_str(raw, "image") or "")
        except ImageError as exc:
            problems.append(f"image: {exc}")
    elif image_digest is not None and not is_digest(image_digest):
        problems.append(f"imageDigest: sha256: and 64 lowercase hex digits (the digest "
                        f"`docker push` printed), got {image_digest!r}")
    problems.extend(_image_presence(raw, image_digest))
    problems.extend(_task_group(raw))

    ssl_mode = (_str(raw, "dbSslMode") or "verify-full").lower()
    if ssl_mode not in SSL_MODES:
        problems.append(f"dbSslMode: one of {', '.join(SSL_MODES)}, got {ssl_mode!r}")

    settings = StackSettings(
        service=_str(raw, "service") or "",
        environment=_str(raw, "environment") or stack,
        subnet_ids=subnet_ids,
        security_group_id=_str(raw, "securityGroupId"),
        vpc_id=_str(raw, "vpcId"),
        database_rules=_bool(raw, "databaseRules", True, problems),
        db_host=_str(raw, "dbHost") or "",
        db_name=_str(raw, "dbName") or "",
        db_port=_int(raw, "dbPort", 5432, problems),
        db_secret_arn=db_secret_arn,
        db_secret_kms_key_arn=_str(raw, "dbSecretKmsKeyArn"),
        db_security_group_id=_str(raw, "dbSecurityGroupId"),
        db_ssl_mode=ssl_mode,
        iam_auth=iam_auth,
        db_user=_str(raw, "dbUser"),
        db_resource_id=_str(raw, "dbResourceId"),
        image=image,
        image_digest=None if image is not None else image_digest,
        repository_name=_str(raw, "repositoryName") or "migration-runner",
        repository_only=_bool(raw, "repositoryOnly", False, problems),
        cluster_name=_str(raw, "clusterName"),
        assign_public_ip=_bool(raw, "assignPublicIp", False, problems),
        log_retention_days=_int(raw, "logRetentionDays", 30, problems),
        cpu=_int(raw, "cpu", 256, problems),
        memory=_int(raw, "memory", 512, problems),
        cpu_architecture=(_str(raw, "cpuArchitecture") or "X86_64").upper(),
        stop_timeout=_int(raw, "stopTimeout", 30, problems),
        task_timeout=_int(raw, "taskTimeout", 1800, problems),
        alarm_topic_arn=_str(raw, "alarmTopicArn"),
        allow_database_ahead=_bool(raw, "allowDatabaseAhead", False, problems),
        migrations_dir=_str(raw, "migrationsDir") or "../alembic/versions",
        launcher=_str(raw, "launcher") or "migration-runner",
        app=_app(raw, problems),
        phases=_bool(raw, "phases", False, problems),
        **_snapshot(raw, problems),
        launcher_identity=launcher_identity(aws or {}, problems),
    )
    problems.extend(_zero_downtime_problems(settings))
    if settings.log_retention_days not in LOG_RETENTION_DAYS:
        problems.append(f"logRetentionDays: one of CloudWatch's periods "
                        f"({', '.join(map(str, LOG_RETENTION_DAYS))}), "
                        f"got {settings.log_retention_days}")
    if settings.memory not in FARGATE_MEMORY.get(settings.cpu, ()):
        problems.append(f"cpu/memory: {settings.cpu}/{settings.memory} is not a Fargate size "
                        f"(e.g. 256/512, 512/1024)")
    if not MIN_STOP_TIMEOUT_S <= settings.stop_timeout <= MAX_STOP_TIMEOUT_S:
        problems.append(f"stopTimeout: {STOP_TIMEOUT_RANGE}, got {settings.stop_timeout}")
    if settings.task_timeout <= 0:
        problems.append(f"taskTimeout: seconds, more than 0, got {settings.task_timeout}")
    if settings.cpu_architecture not in ("X86_64", "ARM64"):
        problems.append(f"cpuArchitecture: X86_64 or ARM64, got {settings.cpu_architecture!r}")
    problems.extend(_name_problems(settings))
    if problems:
        raise SettingsError("stack config `migration-runner:*` needs fixing:\n  - "
                            + "\n  - ".join(problems))
    return settings


# ECS names (cluster, task family, service): letters, digits, hyphens and underscores, at
# most 255; the program's longest adds "-migration-failed" to "<service>-<environment>".
NAME = re.compile(r"[A-Za-z0-9_-]+")
MAX_BASE = 240


def _name_problems(settings: StackSettings) -> list[str]:
    """What AWS or the shell would refuse in the names and the launcher's command line."""
    problems = [f"{key}: letters, digits, - and _ only (ECS names are made of it), got {value!r}"
                for key, value in (("service", settings.service),
                                   ("environment", settings.environment))
                if value and not NAME.fullmatch(value)]
    if len(settings.service) + 1 + len(settings.environment) > MAX_BASE:
        problems.append(f"service and environment: at most {MAX_BASE} characters together")
    try:
        shlex.split(settings.launcher)
    except ValueError as exc:
        problems.append(f"launcher: not a command line ({exc}), got {settings.launcher!r}")
    return problems


KEYS = ("service", "environment", "subnetIds", "securityGroupId", "vpcId", "databaseRules",
        "assignPublicIp", "dbHost",
        "dbPort", "dbName", "dbSecretArn", "dbSecretKmsKeyArn", "dbSecurityGroupId", "dbSslMode",
        "iamAuth", "dbUser", "dbResourceId", "image", "imageDigest", "repositoryName",
        "repositoryOnly", "clusterName", "logRetentionDays", "cpu", "memory", "cpuArchitecture", "stopTimeout",
        "taskTimeout", "alarmTopicArn", "allowDatabaseAhead", "migrationsDir", "launcher", "app",
        "phases", "snapshot", "snapshotIdentifier", "snapshotTimeout")


def load_settings() -> StackSettings:
    """Read the stack's `migration-runner:*` config (the edge; needs a Pulumi program)."""
    import pulumi

    config = pulumi.Config(CONFIG_NAMESPACE)
    raw: dict[str, Any] = {}
    for key in KEYS:
        value = config.get(key)
        if value is not None:
            raw[key] = value
    provider = pulumi.Config("aws")
    aws = {key: provider.get(key) for key in ("profile", "assumeRole", "assumeRoles")}
    return parse_settings(raw, stack=pulumi.get_stack(),
                          aws={key: value for key, value in aws.items() if value is not None})
