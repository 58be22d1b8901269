import pytest

from migration_infra.images import ImageError, ecr_repository_arn, parse_image, repository_of

DIGEST = "sha256:" + "0f" * 32
ECR = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/migration-runner"


def test_a_tag_beside_the_digest_is_dropped():
    image = parse_image(f"{ECR}:v1.2@{DIGEST}")
    assert image.repository == ECR
    assert image.uri == f"{ECR}@{DIGEST}"


def test_a_registry_port_is_not_taken_for_a_tag():
    assert parse_image(f"registry:5000/runner@{DIGEST}").repository == "registry:5000/runner"


@pytest.mark.parametrize("uri", [f"{ECR}:latest", f"{ECR}@sha256:abc", f"@{DIGEST}",
                                 f"{ECR}@md5:" + "0" * 64])
def test_references_not_pinned_by_a_sha256_digest_are_refused(uri):
    with pytest.raises(ImageError):
        parse_image(uri)


def test_the_ecr_repository_arn_comes_from_the_registry_host():
    assert ecr_repository_arn(ECR) == (
        "arn:aws:ecr:eu-west-1:123456789012:repository/team/migration-runner")


@pytest.mark.parametrize("repository", ["ghcr.io/acme/runner", "public.ecr.aws/acme/runner",
                                        "runner"])
def test_images_outside_a_private_ecr_registry_need_no_ecr_permission(repository):
    assert ecr_repository_arn(repository) is None


def test_repository_of_strips_tag_and_digest():
    assert repository_of(f"{ECR}:v1@{DIGEST}") == ECR
    assert repository_of("maive-server:2f9c1e7") == "maive-server"
