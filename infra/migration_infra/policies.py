"""IAM policy documents, as plain data.

Every statement names exact resources. The one exception is `ecr:GetAuthorizationToken`, which
IAM only grants on `*` (it returns a registry login, not access to any repository).
"""

from __future__ import annotations

from typing import Any, Iterable

Policy = dict[str, Any]

ECR_PULL = ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]


class PolicyError(ValueError):
    """A policy would grant more than the named resources."""


def _exact(arns: Iterable[str], what: str) -> list[str]:
    arns = list(arns)
    for arn in arns:
        if not arn.startswith("arn:") or "*" in arn:
            raise PolicyError(f"{what}: {arn!r} is not one exact ARN")
    return arns


def assume_role_policy(service: str = "ecs-tasks.amazonaws.com") -> Policy:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service},
                       "Action": "sts:AssumeRole"}],
    }


def execution_role_policy(*, repository_arns: Iterable[str] = (),
                          secret_arns: Iterable[str] = (),
                          log_group_arns: Iterable[str] = (),
                          kms_key_arns: Iterable[str] = ()) -> Policy:
    """What ECS needs to start the task: pull from these repositories, read these secrets
    (decrypting with these customer-managed keys), write streams in these log groups.

    Raises `PolicyError` for a wildcard or non-ARN resource.
    """
    repositories = _exact(repository_arns, "repository")
    secrets = _exact(secret_arns, "secret")
    keys = _exact(kms_key_arns, "KMS key")
    groups = _exact([arn.removesuffix(":*") for arn in log_group_arns], "log group")
    statements: list[dict[str, Any]] = []
    if repositories:
        statements += [
            {"Sid": "RegistryLogin", "Effect": "Allow",
             "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {"Sid": "PullImage", "Effect": "Allow", "Action": ECR_PULL,
             "Resource": repositories},
        ]
    if secrets:
        statements.append({"Sid": "ReadDatabaseSecret", "Effect": "Allow",
                           "Action": "secretsmanager:GetSecretValue", "Resource": secrets})
    if keys:
        statements.append({"Sid": "DecryptDatabaseSecret", "Effect": "Allow",
                           "Action": "kms:Decrypt", "Resource": keys})
    if groups:
        statements.append({"Sid": "WriteLogs", "Effect": "Allow",
                           "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                           "Resource": [f"{arn}:log-stream:*" for arn in groups]})
    if not statements:
        raise PolicyError("an execution role with nothing to do")
    return {"Version": "2012-10-17", "Statement": statements}


def iam_auth_policy(*, partition: str, region: str, account_id: str, db_resource_id: str,
                    db_user: str) -> Policy:
    """`rds-db:connect` as one database user of one instance (IAM database authentication);
    `db_resource_id` is the instance's DbiResourceId (`db-...`), not its name."""
    arn = f"arn:{partition}:rds-db:{region}:{account_id}:dbuser:{db_resource_id}/{db_user}"
    _exact([arn], "database user")
    return {"Version": "2012-10-17",
            "Statement": [{"Sid": "ConnectAsMigrationUser", "Effect": "Allow",
                           "Action": "rds-db:connect", "Resource": arn}]}


# What the runner calls to snapshot before migrating (MIGRATION_SNAPSHOT), and nothing more.
SNAPSHOT_ACTIONS = {
    "instance": ["rds:CreateDBSnapshot", "rds:DescribeDBSnapshots", "rds:AddTagsToResource"],
    "cluster": ["rds:CreateDBClusterSnapshot", "rds:DescribeDBClusterSnapshots",
                "rds:AddTagsToResource"],
}
# The snapshot ARN's and the database's resource types in IAM, by MIGRATION_SNAPSHOT.
_SNAPSHOT_TYPES = {"instance": ("db", "snapshot"), "cluster": ("cluster", "cluster-snapshot")}


def snapshot_policy(*, kind: str, partition: str, region: str, account_id: str,
                    identifier: str) -> Policy:
    """Snapshot one DB instance (`kind` "instance") or Aurora cluster ("cluster") before
    migrating: create, describe and tag snapshots of `identifier` named as the runner names
    them (`<identifier>-pre-migration-<UTC time>`), on that database and those snapshots only.
    The one wildcard is the time at the end of the snapshot's name (a new name each run).

    Raises `PolicyError` for an unknown kind or an identifier that is not one database's.
    """
    if kind not in _SNAPSHOT_TYPES:
        raise PolicyError(f"snapshot kind {kind!r}: instance or cluster")
    if not identifier or not all(c.isalnum() or c == "-" for c in identifier):
        raise PolicyError(f"snapshot of {identifier!r}: not one DB identifier")
    database_type, snapshot_type = _SNAPSHOT_TYPES[kind]
    prefix = f"arn:{partition}:rds:{region}:{account_id}"
    database = _exact([f"{prefix}:{database_type}:{identifier}"], "database")
    snapshots = f"{prefix}:{snapshot_type}:{identifier}-pre-migration-*"
    return {"Version": "2012-10-17",
            "Statement": [{"Sid": "SnapshotBeforeMigrating", "Effect": "Allow",
                           "Action": SNAPSHOT_ACTIONS[kind],
                           "Resource": [*database, snapshots]}]}
