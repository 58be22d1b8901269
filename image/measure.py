"""What an image costs Fargate, which pulls it whole on every task start: its size as an OCI
archive (gzip-compressed layers, as a registry stores them) and unpacked, per layer; the
"pull" (``podman load`` of that archive into an empty storage: decompress and unpack, no
network); the first no-op ``upgrade`` after it (cold) and the next ones (warm), against a
throwaway PostgreSQL at the head of the service's migrations: wall time of ``podman run``
(which includes a small parent interpreter, :data:`CPU_OF_NOOP`) and the runner's own CPU time.

    uv run python image/measure.py IMAGE [IMAGE ...] [--rounds N (0: sizes only)] [--warm N]

Images are taken from .ci/build-image's storage; rounds alternate between them. Prints a
Markdown report on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from devtools.pgcluster import Cluster  # noqa: E402

RUN_AS_ECS = ["--read-only", "--read-only-tmpfs=false", "--user", "10001", "--network=host"]
# The no-op under a parent that reports the runner's CPU time (user + system) on stderr: on a
# shared machine wall time mostly measures the neighbours, CPU time much less.
CPU_OF_NOOP = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv("/app/.venv/bin/migration-runner", ["migration-runner", "upgrade"])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"cpu {usage.ru_utime + usage.ru_stime}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def podman_env() -> dict[str, str]:
    """The environment that reaches .ci/build-image's storage."""
    out = subprocess.run(
        ["bash", str(ROOT / ".ci" / "build-image"), "--print-env"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(os.environ, **dict(line.split("=", 1) for line in out.splitlines()))


def layers(archive: Path) -> list[dict[str, object]]:
    """Each layer of an OCI archive: compressed and unpacked bytes, and the step that made it."""
    with tarfile.open(archive) as members:

        def blob(digest: str) -> bytes:
            return members.extractfile("blobs/sha256/" + digest.split(":")[1]).read()  # type: ignore[union-attr]

        index = json.loads(members.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        steps = [
            h.get("created_by", "") for h in config.get("history", []) if not h.get("empty_layer")
        ]
        if len(steps) != len(manifest["layers"]):  # a history that does not say
            steps = [""] * len(manifest["layers"])
        found = []
        for layer, step in zip(manifest["layers"], steps, strict=True):
            unpacked = len(zlib.decompress(blob(layer["digest"]), 31))
            found.append(
                {
                    "compressed": layer["size"],
                    "unpacked": unpacked,
                    "step": " ".join(step.replace("/bin/sh -c #(nop) ", "").split())[:70],
                }
            )
    return found


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Wall seconds of a command that must succeed."""
    return run(argv, env)[0]


def run(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    """(wall seconds, stderr) of a command that must succeed."""
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed, proc.stderr


def noop(image: str, env: dict[str, str]) -> tuple[float, float]:
    """(wall, the runner's CPU) seconds of one no-op upgrade in the image."""
    wall, stderr = run(
        [
            "podman",
            "run",
            "--rm",
            *RUN_AS_ECS,
            "--env",
            "DATABASE_URL",
            "--entrypoint",
            "python",
            image,
            "-c",
            CPU_OF_NOOP,
        ],
        env,
    )
    return wall, float(stderr.rsplit("cpu ", 1)[1])


def pull_and_run(archive: Path, image: str, url: str, warm: int) -> dict[str, object]:
    """Into a new, empty storage: load the archive, then the no-op, cold once and warm ``warm``
    times; the storage is removed afterwards."""
    store = Path(tempfile.mkdtemp(prefix="mr-measure-", dir="/var/tmp"))
    conf = store / "storage.conf"
    conf.write_text(
        f'[storage]\ndriver = "overlay"\nrunroot = "{store}/run"\ngraphroot = "{store}/graph"\n'
    )
    env = dict(podman_env(), CONTAINERS_STORAGE_CONF=str(conf), DATABASE_URL=url)
    try:
        load = timed(["podman", "load", "--quiet", "--input", str(archive)], env)
        cold, cold_cpu = noop(image, env)
        warms = [noop(image, env) for _ in range(warm)]
    finally:
        subprocess.run(["podman", "rmi", "--all", "--force"], env=env, capture_output=True)
        shutil.rmtree(store, ignore_errors=True)
    return {
        "load": load,
        "cold": cold,
        "cold cpu": cold_cpu,
        "warm": statistics.median(w for w, _ in warms),
        "warm cpu": statistics.median(c for _, c in warms),
    }


def report(images: list[str], archives: dict[str, Path], runs: dict[str, list[dict]]) -> None:
    """The Markdown tables: layers per image, then the medians of the timings."""
    for image in images:
        found = layers(archives[image])
        print(f"\n### {image}\n\n| layer | compressed MB | unpacked MB |\n|---|---:|---:|")
        for layer in found:
            print(
                f"| `{layer['step']}` | {layer['compressed'] / 1e6:.2f} | "
                f"{layer['unpacked'] / 1e6:.2f} |"
            )
        print(
            f"| **total** (archive file {archives[image].stat().st_size / 1e6:.2f} MB) | "
            f"**{sum(x['compressed'] for x in found) / 1e6:.2f}** | "  # type: ignore[misc]
            f"**{sum(x['unpacked'] for x in found) / 1e6:.2f}** |"
        )  # type: ignore[misc]
    if not runs[images[0]]:
        return
    print(
        f"\nMedians of {len(runs[images[0]])} rounds (each round's own values in brackets)."
        "\n\n| image | load (unpack) ms | cold no-op ms | its CPU ms | warm no-op ms | "
        "its CPU ms |\n|---|---:|---:|---:|---:|---:|"
    )
    for image in images:
        cells = []
        for key in ("load", "cold", "cold cpu", "warm", "warm cpu"):
            values = [r[key] * 1000 for r in runs[image]]
            cells.append(
                f"{statistics.median(values):.0f} [{', '.join(f'{v:.0f}' for v in values)}]"
            )
        print(f"| `{image}` | {' | '.join(cells)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--rounds", type=int, default=3, help="0: the sizes only")
    parser.add_argument("--warm", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mr-measure-", dir="/var/tmp"))
    cluster = Cluster.create()
    try:
        archives = {image: work / f"{n}.tar" for n, image in enumerate(args.images)}
        for image, archive in archives.items():
            timed(
                ["podman", "save", "--quiet", "--format", "oci-archive", "-o", str(archive), image],
                podman_env(),
            )
        cluster.start()
        url = cluster.url()
        env = dict(os.environ, DATABASE_URL=url, MIGRATION_LOG_FORMAT="json")
        timed([sys.executable, "-m", "runner", "upgrade"], env)  # the service's head
        runs: dict[str, list[dict]] = {image: [] for image in args.images}
        for _ in range(args.rounds):
            for image in args.images:
                runs[image].append(pull_and_run(archives[image], image, url, args.warm))
        report(args.images, archives, runs)
    finally:
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
