import pytest

from migration_infra.containers import (
    ContainerError, RunnerContainer, app_container, runner_container, with_init_container)

SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-1-AbCdEf"


def spec(**changes) -> RunnerContainer:
    values = dict(image="repo@sha256:" + "1" * 64, log_group="/ecs/svc-prod/migrations",
                  region="eu-west-1", db_host="db.example", db_name="app",
                  db_secret_arn=SECRET_ARN)
    return RunnerContainer(**{**values, **changes})


def environment(container) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["environment"]}


def test_the_credentials_come_only_through_secrets():
    container = runner_container(spec())
    assert container["secrets"] == [{"name": "DB_SECRET", "valueFrom": SECRET_ARN}]
    env = environment(container)
    assert not {"DB_PASSWORD", "DB_SECRET", "DATABASE_URL", "DB_USER"} & env.keys()
    assert SECRET_ARN not in env.values()


@pytest.mark.parametrize("name", ["DB_PASSWORD", "DATABASE_URL", "API_TOKEN", "my_secret"])
def test_a_secret_looking_variable_in_environment_is_refused(name):
    with pytest.raises(ContainerError, match=name):
        runner_container(spec(extra_environment={name: "x"}))


def test_without_a_secret_or_iam_auth_there_are_no_credentials():
    with pytest.raises(ContainerError, match="no credentials"):
        runner_container(spec(db_secret_arn=None))


def test_iam_auth_names_the_user_and_needs_no_secret():
    container = runner_container(spec(db_secret_arn=None, iam_auth=True, db_user="migrator"))
    assert container["secrets"] == []
    assert environment(container)["MIGRATION_IAM_AUTH"] == "true"
    assert environment(container)["DB_USER"] == "migrator"


def test_the_runner_is_non_root_read_only_and_stops_within_its_timeout():
    container = runner_container(spec(stop_timeout=45))
    assert container["user"] == "10001"
    assert container["readonlyRootFilesystem"] is True
    assert container["stopTimeout"] == 45
    assert container["command"] == ["upgrade"]
    with pytest.raises(ContainerError, match="stopTimeout"):
        runner_container(spec(stop_timeout=121))


def test_logs_go_to_the_group_in_blocking_mode_with_a_stream_prefix():
    assert runner_container(spec())["logConfiguration"] == {
        "logDriver": "awslogs",
        "options": {"awslogs-group": "/ecs/svc-prod/migrations", "awslogs-region": "eu-west-1",
                    "awslogs-stream-prefix": "migrate", "mode": "blocking"}}


def test_tls_verification_uses_the_rds_bundle_in_the_image():
    assert environment(runner_container(spec()))["DB_SSLROOTCERT"] == "/certs/global-bundle.pem"
    assert "DB_SSLROOTCERT" not in environment(runner_container(spec(ssl_mode="require")))


def test_as_init_container_the_runner_is_not_essential_and_every_app_container_waits_for_success():
    sidecar = {"name": "xray", "image": "xray", "essential": False}
    app = {**app_container("app", "app:1", 8080, "/ecs/app", "eu-west-1",
                                environment={}, db_secret_arn=SECRET_ARN),
           "dependsOn": [{"containerName": "xray", "condition": "START"}]}
    runner = runner_container(spec())
    containers = with_init_container([app, sidecar], runner)

    by_name = {c["name"]: c for c in containers}
    assert by_name["migrate"]["essential"] is False
    assert by_name["app"]["dependsOn"] == [{"containerName": "xray", "condition": "START"},
                                           {"containerName": "migrate", "condition": "SUCCESS"}]
    assert by_name["xray"]["dependsOn"] == [{"containerName": "migrate",
                                             "condition": "SUCCESS"}]
    assert runner["essential"] is True and "dependsOn" not in sidecar  # inputs untouched
    assert with_init_container(containers[1:], runner) == containers  # applying twice: same


def test_an_app_container_named_like_the_runner_is_refused():
    with pytest.raises(ContainerError, match="migrate"):
        with_init_container([{"name": "migrate", "image": "x"}], runner_container(spec()))


def test_the_apps_health_probe_answers_by_the_status_of_the_health_path():
    """The probe the app container runs, against a real HTTP server: 0 on 200, not 0 on 503."""
    import http.server
    import subprocess
    import sys
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        status = 200

        def do_GET(self):
            self.send_response(Health.status if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        command = app_container("app", "app:1", port, "/ecs/app", "eu-west-1", environment={},
                                db_secret_arn=SECRET_ARN)["healthCheck"]["command"]
        assert command[:2] == ["CMD", "python"]
        probe = [sys.executable, *command[2:]]
        assert subprocess.run(probe, capture_output=True).returncode == 0
        Health.status = 503
        assert subprocess.run(probe, capture_output=True).returncode != 0
    finally:
        server.shutdown()
        server.server_close()
