import pytest

from migration_infra.policies import PolicyError, execution_role_policy, iam_auth_policy

REPO = "arn:aws:ecr:eu-west-1:123456789012:repository/migration-runner"
SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-1-AbCdEf"
GROUP = "arn:aws:logs:eu-west-1:123456789012:log-group:/ecs/svc-prod/migrations"
KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def statements(policy) -> dict[str, dict]:
    return {s["Sid"]: s for s in policy["Statement"]}


def test_the_execution_role_names_exact_resources():
    policy = statements(execution_role_policy(repository_arns=[REPO], secret_arns=[SECRET],
                                              log_group_arns=[GROUP], kms_key_arns=[KEY]))
    assert policy["PullImage"]["Resource"] == [REPO]
    assert policy["ReadDatabaseSecret"] == {
        "Sid": "ReadDatabaseSecret", "Effect": "Allow",
        "Action": "secretsmanager:GetSecretValue", "Resource": [SECRET]}
    assert policy["DecryptDatabaseSecret"]["Resource"] == [KEY]
    assert policy["WriteLogs"]["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert policy["WriteLogs"]["Resource"] == [f"{GROUP}:log-stream:*"]
    wildcards = [s["Sid"] for s in policy.values() if s["Resource"] == "*"]
    assert wildcards == ["RegistryLogin"]  # GetAuthorizationToken: IAM grants it only on *
    assert policy["RegistryLogin"]["Action"] == "ecr:GetAuthorizationToken"


def test_a_log_group_arn_with_the_old_star_suffix_is_normalised():
    policy = statements(execution_role_policy(log_group_arns=[f"{GROUP}:*"]))
    assert policy["WriteLogs"]["Resource"] == [f"{GROUP}:log-stream:*"]


def test_an_image_outside_ecr_needs_no_ecr_statement():
    assert set(statements(execution_role_policy(secret_arns=[SECRET],
                                                log_group_arns=[GROUP]))) == {
        "ReadDatabaseSecret", "WriteLogs"}


@pytest.mark.parametrize("kwargs", [{"secret_arns": ["*"]},
                                    {"secret_arns": [SECRET.replace("AbCdEf", "*")]},
                                    {"log_group_arns": ["*"]},
                                    {"repository_arns": ["migration-runner"]},
                                    {}])
def test_wildcards_and_names_instead_of_arns_are_refused(kwargs):
    with pytest.raises(PolicyError):
        execution_role_policy(**kwargs)


def test_iam_auth_connects_as_one_user_of_one_instance():
    policy = iam_auth_policy(partition="aws", region="eu-west-1", account_id="123456789012",
                             db_resource_id="db-ABCDEFGHIJKL", db_user="migrator")
    assert policy["Statement"] == [{
        "Sid": "ConnectAsMigrationUser", "Effect": "Allow", "Action": "rds-db:connect",
        "Resource": "arn:aws:rds-db:eu-west-1:123456789012:dbuser:db-ABCDEFGHIJKL/migrator"}]
