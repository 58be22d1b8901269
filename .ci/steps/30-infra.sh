#!/usr/bin/env bash
# infra/ (the Pulumi program): installs infra's own locked environment (pulumi, pulumi-aws,
# pulumi-command: kept out of the runner's install and image), runs its tests offline -- Pulumi's
# unit-test mocks, no Pulumi CLI, no AWS, no network (inside a network namespace with only
# its loopback interface where the machine allows one) -- and checks the example GitHub Actions workflows
# with actionlint (and shellcheck on their `run:` scripts). Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/../../infra"
command -v uv >/dev/null 2>&1 || python3 -m pip install -q uv
uv sync --locked --quiet
if ! command -v shellcheck >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  { $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      $sudo_cmd apt-get install -y -qq shellcheck >/dev/null; } \
    || echo "shellcheck could not be installed: actionlint checks the workflows without it"
fi

offline=()
if unshare --net true 2>/dev/null; then
  # loopback only (the health probe's test serves HTTP on 127.0.0.1): still offline
  offline=(unshare --net sh -c 'ip link set lo up 2>/dev/null || true; exec "$@"' offline)
else
  echo "no network namespace here: the infra tests run offline by construction only"
fi
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
"${offline[@]}" env -u PULUMI_ACCESS_TOKEN -u PULUMI_BACKEND_URL -u AWS_PROFILE \
  -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN \
  HOME="$home" PULUMI_HOME="$home/.pulumi" PATH="$PWD/.venv/bin:/usr/bin:/bin" \
  .venv/bin/python -m pytest -q
.venv/bin/actionlint -no-color examples/*.yml
echo "actionlint: examples/*.yml clean"
