"""Every side-by-side scenario in one run, on one throwaway cluster; writes RESULTS.md (a
table per scenario, the machine and date in its header, the targets with their verdicts)
and the PNG plots next to it.

    uv run --group bench python bench/run_all.py            # full: bench/RESULTS.md
    uv run --group bench python bench/run_all.py --quick    # fewer rounds: bench/RESULTS.md
    uv run --group bench python bench/run_all.py --smoke    # tiny sizes, into a temp dir
    uv run --group bench python bench/run_all.py --only herd,wakeup

Exit status: 0 when every scenario ran (targets missed or not), 1 when one failed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
import traceback
from pathlib import Path

from _bench import (
    NPM_PACKAGES,
    TOOLS,
    Section,
    Table,
    add_profile_options,
    bench_session,
    busy_warning,
    loadavg,
    machine_lines,
    profile_of,
    verdict,
)

SCENARIOS = (
    "noop_growth",
    "container",
    "full_upgrade",
    "herd",
    "handoff",
    "wakeup",
    "startup",
    "contention",
)
HERE = Path(__file__).resolve().parent


def header(lines: list[str], profile: str, command: str) -> str:
    tools = Table(["name in the tables", "what runs"], [[f"`{k}`", v] for k, v in TOOLS.items()])
    return "\n".join(
        [
            "# Benchmark results: the runner side by side with what users would run instead",
            "",
            f"Written by `{command}` ({profile} sizes). Do not edit by hand; see bench/README.md "
            "for how to read it.",
            "",
            *[f"- {line}" for line in lines],
            "",
            "Every figure is a median over repeated whole-process runs; every comparison was "
            "measured alternately in the same run (A B A B ...). The peers are installed by the "
            f"bench with npm into a temporary directory ({', '.join(NPM_PACKAGES)}) and run "
            "equivalent generated SQL migrations (`SELECT 1` per step, as the Alembic revisions).",
            "",
            tools.markdown(),
            "",
            "",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_profile_options(parser)
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of {','.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for RESULTS.md and the plots (default: bench/ for a full "
        "run, a temporary directory for --smoke)",
    )
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    profile = profile_of(args)
    out = args.out or (Path(tempfile.mkdtemp(prefix="bench-smoke-")) if args.smoke else HERE)
    out.mkdir(parents=True, exist_ok=True)
    command = (
        "uv run --group bench python bench/run_all.py"
        + ("" if profile == "full" else f" --{profile}")
        + (f" --only {','.join(chosen)}" if args.only else "")
    )
    started = time.monotonic()
    sections: list[Section] = []
    failed = []
    with bench_session() as bench:
        lines = machine_lines(bench)
        busy = busy_warning()
        lines += [busy] if busy else []
        print("\n".join(lines), flush=True)
        for name in chosen:
            module = importlib.import_module(name)
            t0 = time.monotonic()
            print(f"== {name} ...", flush=True)
            try:
                section = module.run(bench, out=out, **module.SIZES[profile])
            except Exception as exc:  # report it, run the others
                failed.append(name)
                section = Section(f"{name}: FAILED")
                section.notes.append(
                    "```\n"
                    + "".join(traceback.format_exception_only(type(exc), exc))[-4000:]
                    + "\n```"
                )
                traceback.print_exc()
            section.seconds = time.monotonic() - t0
            sections.append(section)
            print(f"== {name}: {section.seconds:.0f} s", flush=True)
        if bench.npm_note:
            lines.append(bench.npm_note)
    lines.append(
        f"load average at the end: {loadavg()}; whole run {time.monotonic() - started:.0f} s"
    )
    targets = Table(
        ["scenario", "target", "measured", "verdict"],
        [
            [s.title.split(":")[0], name, measured, verdict(met)]
            for s in sections
            for name, measured, met in s.targets
        ],
    )
    text = (
        header(lines, profile, command)
        + "## Targets\n\n"
        + targets.markdown()
        + "\n\n"
        + "\n".join(s.markdown() for s in sections)
    )
    (out / "RESULTS.md").write_text(text)
    print(
        f"wrote {out / 'RESULTS.md'} ({time.monotonic() - started:.0f} s)"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
