#!/usr/bin/env bash
# The image: hadolint on the Dockerfile, then the container tests (tests/image/test_image.py), which
# build the image and its EXTRAS="aws lint" variant with .ci/build-image (podman; a local Debian
# base for the build stage, cached under /var/tmp/migration-runner-ci; the image itself is FROM
# scratch) and run them read-only as uid 10001 against a real PostgreSQL, and hold the default
# image to its 50 MB compressed budget.
# Installs podman, buildah and debootstrap from Debian's packages when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
missing=()
for tool in podman buildah debootstrap runc; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq \
    podman buildah debootstrap fuse-overlayfs slirp4netns uidmap runc curl >/dev/null
fi
uv run --locked hadolint Dockerfile
echo "hadolint: Dockerfile clean"
MIGRATION_RUNNER_IMAGE_TESTS=required uv run --locked pytest -q -n 2 tests/image/test_image.py
