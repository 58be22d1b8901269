"""Scenario 1b, the runner's no-op inside its container: ``podman run`` of the image (built by
``.ci/build-image``, or ``BENCH_IMAGE``) on a database at the head of the service's own
migrations, against the container's start alone (the image has no ``true``: its one program,
an isolated interpreter doing nothing, ``--entrypoint python -I -S -c ''``) and the same no-op
on the host. Skipped, saying why, without podman or an image.

    uv run --group bench python bench/container.py [--smoke]

``--smoke`` uses ``BENCH_IMAGE`` only (it never builds): building is the image step's job.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from _bench import (
    ROOT,
    Bench,
    Command,
    Failed,
    Section,
    Table,
    alternate,
    median,
    ms,
    runner_env,
    standalone,
    with_bytecode,
)

SIZES = {"smoke": {"rounds": 1, "build": False}, "full": {"rounds": 10, "build": True}}
SIZES["quick"] = dict(SIZES["full"], rounds=4)
KINDS = ("container no-op", "container start alone", "host no-op")


def image_and_env(build: bool) -> tuple[str | None, dict[str, str], str]:
    """(image reference, podman's environment, why not) from BENCH_IMAGE or .ci/build-image."""
    env = dict(os.environ)
    if not shutil.which("podman"):
        return (
            None,
            env,
            ("podman is not installed (the image step, .ci/steps/40-image.sh, installs it)"),
        )
    script = ROOT / ".ci" / "build-image"
    if script.exists():
        proc = subprocess.run(
            ["bash", str(script), "--print-env"], capture_output=True, text=True, timeout=60
        )
        for line in proc.stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.startswith("CONTAINERS_") and key not in os.environ:
                env[key] = value
    if os.environ.get("BENCH_IMAGE"):
        return os.environ["BENCH_IMAGE"], env, ""
    if not build:
        return None, env, "not built in a smoke run (set BENCH_IMAGE=<reference> to include it)"
    if not script.exists():
        return None, env, ".ci/build-image does not exist on this branch yet"
    proc = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, env=env, timeout=1800
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return None, env, f".ci/build-image failed ({proc.returncode}): {proc.stderr[-500:]}"
    return lines[-1].strip(), env, ""


def run(bench: Bench, out: Path, rounds: int, build: bool) -> Section:
    section = Section("1b. The runner's no-op inside its container")
    image, env, why = image_and_env(build)
    if image is None:
        section.notes.append(f"skipped: {why}")
        return section
    db = bench.create_db("container_noop")
    podman = ["podman", "run", "--rm", "--network=host", "--read-only", "--user", "10001"]
    url_env = dict(env, DATABASE_URL=bench.url(db))
    commands = {
        "container no-op": Command(
            "container", [*podman, "--env", "DATABASE_URL", image, "upgrade"], url_env, bench.tmp
        ),
        "container start alone": Command(
            "container",
            [*podman, "--entrypoint", "python", image, "-I", "-S", "-c", ""],
            env,
            bench.tmp,
        ),
    }
    manifest = bench.tmp / "service-manifest.json"
    host_env = with_bytecode(runner_env(bench.url(db), ROOT / "alembic.ini"), bench.cache)
    host_env["MIGRATION_MANIFEST"] = str(manifest)
    commands["host no-op"] = Command(
        "runner", [bench.python, "-m", "runner", "upgrade"], host_env, bench.tmp
    )
    first = bench.run(commands["container no-op"])  # the service's migrations, to head
    if first.returncode != 0 or first.event("summary").get("outcome") != "migrated":
        raise Failed("the image did not migrate an empty database:\n" + first.tail())
    made = bench.run(
        Command("runner", [bench.python, "-m", "runner", "manifest"], host_env, bench.tmp)
    )
    if made.returncode != 0:
        raise Failed("`runner manifest` for the service's migrations failed:\n" + made.tail())
    for kind in KINDS:  # warm-up
        bench.run(commands[kind])
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    for _r, kind in alternate(KINDS, rounds):
        done = bench.run(commands[kind])
        if done.returncode != 0 or (
            kind != "container start alone" and done.event("summary").get("outcome") != "up_to_date"
        ):
            raise Failed(f"{kind} did not find the database up to date:\n" + done.tail())
        times[kind].append(done.seconds)
    base = median(times["container start alone"])
    rows = [
        [
            kind,
            ms(median(times[kind])),
            ms(median(times[kind]) - base) if kind == "container no-op" else "",
        ]
        for kind in KINDS
    ]
    section.tables.append(Table(["process", "median wall", "minus the container's start"], rows))
    section.intro = [
        f"`podman run --rm --network=host --read-only --user 10001` of `{image}` on a database "
        f"at the head of the service's migrations; medians of {rounds} runs each, alternating, "
        "after one warm-up each. The image carries compiled bytecode and its manifest; the "
        "host run (the runtime virtualenv's python) uses the same migrations with a manifest "
        "written for it."
    ]
    return section


if __name__ == "__main__":
    sys.exit(standalone(__doc__, SIZES, run))
