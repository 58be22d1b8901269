#!/usr/bin/env bash
# Every bench/ scenario once at a tiny size, so that the bench scripts cannot rot. Not a
# measurement (the sizes are far too small, and the numbers land in a temporary directory):
# it fails only when a scenario fails to run or a tool does the wrong thing.
# Installs what it needs: the bench dependency group (matplotlib) through uv, and node/npm
# when missing; the bench itself installs the peers (dbmate, node-pg-migrate) with npm into a
# temporary directory; with podman and .ci/build-image, the container scenario runs the image.
# About a minute and a half on 2 quiet cores (an estimate: 4 min on the shared machine at a
# load average of 18 to 29, the image a cached rebuild).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v npm >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq nodejs npm >/dev/null
fi
# the container scenario: the image the image step has just built (a cached rebuild here)
if [ -z "${BENCH_IMAGE:-}" ] && command -v podman >/dev/null 2>&1 && [ -f .ci/build-image ]; then
  if image=$(timeout 300 bash .ci/build-image 2>/dev/null | tail -n 1) && [ -n "$image" ]; then
    export BENCH_IMAGE=$image
  else
    echo "bench smoke: .ci/build-image failed; the container scenario will be skipped" >&2
  fi
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
timeout 600 uv run --locked --group bench python bench/run_all.py --smoke --out "$out"
# one UPDATE against backfill() while an app writes (issue 24), tiny: that the script runs
timeout 300 uv run --locked --group bench python bench/backfill.py --rows 20000 --batch 1000
