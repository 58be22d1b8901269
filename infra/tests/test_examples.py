"""The example workflows, read as a platform team would run them (actionlint checks their
syntax and shell in .ci/steps/30-infra.sh; these check what they deploy)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.conftest import INFRA

WORKFLOWS = sorted((INFRA / "examples").glob("github-actions-*.yml"))


def workflow(name: str) -> dict[str, Any]:
    return yaml.safe_load((INFRA / "examples" / name).read_text())


def steps(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in document["jobs"].values() for step in job["steps"]]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_job_has_a_time_limit(path):
    """GitHub's default is 6 hours; a stuck rollout should not hold the deploy lock that long."""
    jobs = yaml.safe_load(path.read_text())["jobs"]
    assert {name: job.get("timeout-minutes") for name, job in jobs.items()
            if not isinstance(job.get("timeout-minutes"), int)} == {}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_a_rerun_pushes_a_new_tag(path):
    """The repositories' tags are immutable: a tag made of the commit alone fails at the push
    of "Re-run all jobs"."""
    text = path.read_text()
    tags = [line for line in text.splitlines() if "github.sha" in line]
    assert tags and all("github.run_attempt" in line for line in tags), tags


def test_the_pulumi_deploy_passes_both_images_by_digest():
    [up] = [s["run"] for s in steps(workflow("github-actions-deploy.yml"))
            if "pulumi up" in s.get("run", "")]
    assert '--config "migration-runner:imageDigest=$IMAGE_DIGEST"' in up
    assert '--config "migration-runner:app.image=$APP_IMAGE"' in up and "--config-path" in up
    outputs = workflow("github-actions-deploy.yml")["jobs"]["image"]["outputs"]
    assert outputs["app-image"].endswith("@${{ steps.app.outputs.digest }}")


def test_the_plain_deploy_registers_the_new_app_image_and_waits_long_enough():
    document = workflow("github-actions-migrate-then-deploy.yml")
    text = yaml.safe_dump(document)
    assert "force-new-deployment" not in text and "services-stable" not in text
    by_id = {s.get("id"): s for s in steps(document)}
    assert by_id["render"]["with"]["image"] == "${{ steps.image.outputs.app }}"
    [deploy] = [s for s in steps(document)
                if s.get("uses", "").startswith("aws-actions/amazon-ecs-deploy-task-definition")]
    assert deploy["with"]["task-definition"] == "${{ steps.render.outputs.task-definition }}"
    assert deploy["with"]["wait-for-service-stability"] is True
    names = [s.get("name", "") for s in steps(document)]
    assert names.index(deploy["name"]) > next(i for i, n in enumerate(names)
                                              if n.startswith("Migrate"))
