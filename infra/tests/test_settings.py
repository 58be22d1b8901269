import pytest
import yaml

from migration_infra.settings import KEYS, SettingsError, parse_settings
from tests.conftest import INFRA

DIGEST = "sha256:" + "ab" * 32


def test_the_example_stack_config_is_valid(settings):
    assert settings.service == "maive-server"
    assert settings.environment == "prod"
    assert settings.subnet_ids == ("subnet-0a1b2c3d4e5f60001", "subnet-0a1b2c3d4e5f60002")
    assert settings.creates_repository
    assert settings.db_ssl_mode == "verify-full"
    assert settings.app is not None and settings.app.container_port == 8080


def test_every_missing_key_is_named_at_once():
    with pytest.raises(SettingsError) as error:
        parse_settings({}, stack="dev")
    message = str(error.value)
    for key in ("service", "subnetIds", "securityGroupId", "dbHost", "dbName", "dbSecretArn"):
        assert f"{key}:" in message


def test_lists_may_come_as_pulumi_json_strings(config):
    config["subnetIds"] = '["subnet-1", "subnet-2"]'
    assert parse_settings(config, stack="prod").subnet_ids == ("subnet-1", "subnet-2")


def test_an_existing_image_must_be_pinned_by_digest(config):
    del config["imageDigest"]
    config["image"] = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/migration-runner:latest"
    with pytest.raises(SettingsError, match="image: .*not pinned by digest"):
        parse_settings(config, stack="prod")


def test_an_existing_image_pinned_by_digest_creates_no_repository(config):
    del config["imageDigest"]
    config["image"] = f"ghcr.io/acme/migration-runner:1.2@{DIGEST}"
    settings = parse_settings(config, stack="prod")
    assert not settings.creates_repository
    assert settings.image.uri == f"ghcr.io/acme/migration-runner@{DIGEST}"


def test_the_first_up_asks_for_the_repository_alone_and_a_bad_digest_is_refused(config):
    del config["imageDigest"]
    config["repositoryOnly"] = True
    assert parse_settings(config, stack="prod").image_digest is None
    config["imageDigest"] = DIGEST
    with pytest.raises(SettingsError, match="repositoryOnly: only for the first"):
        parse_settings(config, stack="prod")
    del config["repositoryOnly"]
    config["imageDigest"] = "4f53cda18c2b"
    with pytest.raises(SettingsError, match="imageDigest: sha256: and 64"):
        parse_settings(config, stack="prod")


def test_image_and_image_digest_together_are_refused(config):
    config["image"] = f"ghcr.io/acme/migration-runner@{DIGEST}"
    with pytest.raises(SettingsError, match="give one"):
        parse_settings(config, stack="prod")


def test_iam_auth_needs_the_user_and_the_instance_resource_id_but_no_secret(config):
    del config["dbSecretArn"], config["app"]
    config["iamAuth"] = "true"
    with pytest.raises(SettingsError) as error:
        parse_settings(config, stack="prod")
    assert "dbUser: required" in str(error.value)
    assert "dbResourceId: required" in str(error.value)
    assert "dbSecretArn" not in str(error.value)
    config.update(dbUser="migrator", dbResourceId="db-ABCDEFGHIJKL")
    assert parse_settings(config, stack="prod").iam_auth


@pytest.mark.parametrize("key,value,complaint", [
    ("cpu", 256, None),
    ("memory", 4096, "256/4096 is not a Fargate size"),
    ("logRetentionDays", 10, "logRetentionDays: one of"),
    ("stopTimeout", 300, "stopTimeout: 10 to 120 s"),
    ("stopTimeout", 9, "stopTimeout: 10 to 120 s"),
    ("dbSslMode", "verify", "dbSslMode: one of"),
    ("dbPort", "five", "dbPort: expected a whole number"),
    ("assignPublicIp", "yes", "assignPublicIp: expected true or false"),
    ("cpuArchitecture", "arm64", None),
])
def test_values_aws_would_refuse_are_refused_before_any_resource(config, key, value,
                                                                  complaint):
    config[key] = value
    if complaint is None:
        parse_settings(config, stack="prod")
        return
    with pytest.raises(SettingsError) as error:
        parse_settings(config, stack="prod")
    assert complaint in str(error.value)


def test_the_environment_defaults_to_the_stack_name(config):
    assert parse_settings(config, stack="staging").environment == "staging"
    config["environment"] = "production"
    assert parse_settings(config, stack="staging").environment == "production"


def test_a_misspelt_key_is_refused_rather_than_ignored(config):
    config["alarmTopicARN"] = "arn:aws:sns:eu-west-1:123456789012:oncall"
    with pytest.raises(SettingsError, match="alarmTopicARN: unknown setting"):
        parse_settings(config, stack="prod")


def test_the_esc_example_exports_only_settings_the_runner_reads_and_no_literal_secret():
    document = yaml.safe_load((INFRA / "examples" / "esc-environment.yaml").read_text())
    variables = document["values"]["environmentVariables"]
    db = {name for name in variables if name.startswith("DB_")}
    assert db == {"DB_HOST", "DB_PORT", "DB_NAME", "DB_SECRET", "DB_SSLMODE"}
    assert variables["DB_SECRET"].startswith("${aws.secrets.")  # opened at `esc run` time
    assert all(value.startswith("${") for name, value in variables.items()
               if name.startswith("AWS_") and name != "AWS_REGION")
    stack_keys = {key.split(":", 1)[1] for key in document["values"]["pulumiConfig"]}
    assert stack_keys <= set(KEYS)


def test_the_stack_file_alone_is_refused_naming_what_ci_passes(versions_dir):
    """A `pulumi up` from a laptop, without the images CI passed with --config."""
    from tests.conftest import example_config

    with pytest.raises(SettingsError) as error:
        parse_settings({**example_config(), "migrationsDir": str(versions_dir)}, stack="prod")
    problems = str(error.value)
    assert "imageDigest: required" in problems and "app.image: required" in problems
    assert "pulumi stack output" in problems


def test_the_apps_image_must_be_pinned_by_digest(config):
    config["app"] = {**config["app"], "image": "registry/maive-server:2f9c1e7"}
    with pytest.raises(SettingsError, match="app.image: .*not pinned by digest"):
        parse_settings(config, stack="prod")


def test_with_iam_auth_the_app_still_needs_a_secret_of_its_own(config):
    del config["dbSecretArn"]
    config.update(iamAuth=True, dbUser="migrator", dbResourceId="db-ABCDEFGHIJKL")
    with pytest.raises(SettingsError, match="app.dbSecretArn: required"):
        parse_settings(config, stack="prod")
    config["app"] = {**config["app"], "dbSecretArn": "arn:aws:secretsmanager:eu-west-1:"
                     "123456789012:secret:maive-app-AbCdEf"}
    assert parse_settings(config, stack="prod").app.db_secret_arn.endswith("maive-app-AbCdEf")


def test_a_chain_of_assumed_roles_is_refused_for_the_gate(config):
    roles = [{"roleArn": "arn:aws:iam::1:role/a"}, {"roleArn": "arn:aws:iam::2:role/b"}]
    with pytest.raises(SettingsError, match="aws:assumeRoles: the gate's launcher assumes one"):
        parse_settings(config, stack="prod", aws={"assumeRoles": roles})
    settings = parse_settings(config, stack="prod", aws={"assumeRoles": roles[1:]})
    assert settings.launcher_identity == (("MIGRATION_ECS_ROLE_ARN", "arn:aws:iam::2:role/b"),)


def test_the_tasks_group_is_given_or_created_in_the_vpc_never_both(config):
    config["vpcId"] = "vpc-1"
    with pytest.raises(SettingsError, match="securityGroupId, vpcId: give one"):
        parse_settings(config, stack="prod")
    del config["vpcId"], config["securityGroupId"]
    with pytest.raises(SettingsError, match="securityGroupId: required .*or vpcId"):
        parse_settings(config, stack="prod")


@pytest.mark.parametrize("key,value,complaint", [
    ("service", "my service", "service: letters, digits, - and _ only"),
    ("service", "ördérs", "service: letters, digits, - and _ only"),
    ("environment", "prod/eu", "environment: letters, digits, - and _ only"),
    ("environment", "x" * 300, "service and environment: at most 240 characters together"),
    ("launcher", "uv run 'oops", "launcher: not a command line (No closing quotation)"),
])
def test_names_and_the_launcher_line_aws_or_the_shell_would_refuse_are_refused(config, key,
                                                                              value, complaint):
    """The service and environment name the cluster, the task families and the service
    (ECS: letters, digits, hyphens and underscores, 255 at most), and the launcher is split
    like a shell would. Before, each was accepted and `pulumi up` failed halfway: at AWS after
    the first resources, or in the gate's apply with a Python traceback."""
    config[key] = value
    with pytest.raises(SettingsError) as error:
        parse_settings(config, stack="prod")
    assert complaint in str(error.value)
