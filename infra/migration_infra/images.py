"""Image references: an image pinned by digest, and the ECR repository it comes from.

The runner's task always names its image by digest (`repo@sha256:...`): a tag can move, and
the gate re-runs exactly when the digest changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_ECR_HOST = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")


class ImageError(ValueError):
    """An image reference that is not pinned by a sha256 digest, or is malformed."""


@dataclass(frozen=True)
class ImageRef:
    repository: str  # registry host and path, no tag or digest
    digest: str      # sha256:<64 hex>

    @property
    def uri(self) -> str:
        return f"{self.repository}@{self.digest}"


def is_digest(value: str) -> bool:
    return bool(_DIGEST.match(value))


def parse_image(uri: str) -> ImageRef:
    """Split `REPOSITORY[:TAG]@sha256:HEX`; raise `ImageError` unless it is pinned by digest."""
    repository, sep, digest = uri.strip().partition("@")
    if not sep:
        raise ImageError(f"{uri!r} is not pinned by digest: use REPOSITORY@sha256:<digest> "
                         "(`docker buildx imagetools inspect` or `docker push` prints it)")
    if not is_digest(digest):
        raise ImageError(f"{uri!r}: the digest must be sha256: and 64 lowercase hex digits")
    repository = repository_of(repository)  # a tag beside the digest says nothing more
    if not repository or repository.startswith("/") or repository.endswith("/"):
        raise ImageError(f"{uri!r}: no repository before the digest")
    return ImageRef(repository=repository, digest=digest)


def ecr_repository_arn(repository: str, partition: str = "aws") -> str | None:
    """The ARN of the ECR repository `ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME`, or None
    when the image lives in another registry (then no ECR permission is needed)."""
    host, sep, name = repository.partition("/")
    match = _ECR_HOST.match(host)
    if not sep or not match:
        return None
    return (f"arn:{partition}:ecr:{match['region']}:{match['account']}:repository/{name}")


def repository_of(uri: str) -> str:
    """`uri` without its digest and tag: `host/path:tag@sha256:...` -> `host/path`."""
    repository = uri.strip().partition("@")[0]
    head, _, last = repository.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]
