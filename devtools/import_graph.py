"""``python -m devtools.import_graph [--png PATH]``: the import graph of ``runner/``, by folder.

Reads every module under ``runner/`` with :mod:`ast` (imports inside functions count, as for
import-linter), and prints the folders in the layer order of pyproject's ``layers`` contract
with how many imports go from each folder to each lower one, any import that goes up (none,
while ``lint-imports`` passes), and the module graph's depth (the longest chain of imports).
With ``--png`` it also draws the folder graph, as a matrix, with matplotlib (the ``bench`` dependency group:
``uv run --locked --group bench python -m devtools.import_graph --png docs/architecture.png``).
The figure in docs/architecture.md is made this way.
"""

from __future__ import annotations

import argparse
import ast
import functools
import sys
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def contract_layers(pyproject: Path = ROOT / "pyproject.toml") -> tuple[tuple[str, ...], ...]:
    """The folders in the order of pyproject's ``layers`` contract, top to bottom, siblings
    together; runner's root modules (the kernel's layers) become one row, "kernel"."""
    config = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in config if c["type"] == "layers"]
    rows: list[tuple[str, ...]] = []
    for layer in layers:
        names = tuple(n.strip() for n in layer.split("|"))
        if all((ROOT / "runner" / n).is_dir() for n in names):
            rows.append(names)
        elif names != ("__main__",) and ("kernel",) not in rows:
            rows.append(("kernel",))
    return tuple(rows)


LAYERS = contract_layers()
RANK = {folder: rank for rank, row in enumerate(LAYERS) for folder in row}


def modules(package: Path = ROOT / "runner") -> dict[str, Path]:
    """Every module of the package by dotted name (packages' ``__init__`` left out: they hold
    docstrings, no code)."""
    return {
        ".".join(path.relative_to(package.parent).with_suffix("").parts): path
        for path in sorted(package.rglob("*.py"))
        if path.name != "__init__.py"
    }


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` imports, anywhere in its body."""
    package = name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    return {_owner(t, known) for t in targets if _owner(t, known)} - {name}


def _owner(target: str, known: set[str]) -> str:
    """The longest known module ``target`` names or lies in ("" if none)."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return ""


def folder(module: str) -> str:
    """The concept folder of a runner module: its subpackage, or "kernel" for the root's."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANK):
        return parts[1]
    return "kernel" if len(parts) == 2 and parts[1] != "__main__" else ""


def graph() -> dict[str, set[str]]:
    """Module -> the runner modules it imports (``runner.__main__`` left out)."""
    found = modules()
    known = set(found)
    return {
        name: imports(name, path, known)
        for name, path in found.items()
        if name != "runner.__main__"
    }


def depth(edges: dict[str, set[str]]) -> int:
    """The longest chain of imports, in modules (cycles inside a package counted once)."""

    @functools.cache
    def longest(module: str, seen: frozenset[str]) -> int:
        onward = [longest(t, seen | {t}) for t in edges.get(module, ()) if t not in seen]
        return 1 + max(onward, default=0)

    return max(longest(m, frozenset({m})) for m in edges)


def by_folder(edges: dict[str, set[str]]) -> Counter[tuple[str, str]]:
    """(importing folder, imported folder) -> how many module imports."""
    counts: Counter[tuple[str, str]] = Counter()
    for source, targets in edges.items():
        for target in targets:
            a, b = folder(source), folder(target)
            if a and b and a != b:
                counts[a, b] += 1
    return counts


def report(edges: dict[str, set[str]]) -> str:
    counts = by_folder(edges)
    sizes = Counter(folder(m) for m in edges)
    lines = [f"runner/: {len(edges)} modules, {sum(map(len, edges.values()))} imports"]
    lines.append(f"longest chain of imports: {depth(edges)} modules")
    for row in LAYERS:
        for name in row:
            below = sorted(
                ((b, n) for (a, b), n in counts.items() if a == name), key=lambda x: RANK[x[0]]
            )
            targets = ", ".join(f"{b} {n}" for b, n in below) or "-"
            lines.append(f"{name:>10} ({sizes[name]:>2} modules) -> {targets}")
    upward = [(a, b) for (a, b) in counts if RANK[b] <= RANK[a]]
    lines.append(f"imports that go up or sideways: {upward or 'none'}")
    return "\n".join(lines)


def draw(edges: dict[str, set[str]], out: Path) -> None:
    """The folder graph as a PNG matrix: a row per importing folder, a column per imported
    one, both in layer order, each cell the number of module imports. The layer rule is the
    picture: every number lies right of the shaded cells of its own layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    counts, sizes = by_folder(edges), Counter(folder(m) for m in edges)
    names = [name for row in LAYERS for name in row]
    fig, ax = plt.subplots(figsize=(9.5, 7.5))
    top = max(counts.values())
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            same_layer = RANK[a] == RANK[b]
            n = counts.get((a, b), 0)
            shade = (
                "#d9dde3" if same_layer else (plt.cm.Blues(0.15 + 0.7 * n / top) if n else "white")
            )
            ax.add_patch(Rectangle((j, i), 1, 1, facecolor=shade, edgecolor="#c4c9d0", lw=0.5))
            if n:
                ax.text(
                    j + 0.5,
                    i + 0.5,
                    str(n),
                    ha="center",
                    va="center",
                    fontsize=10,
                    color="white" if n > top / 2 else "#123",
                )
    ax.set_xlim(0, len(names))
    ax.set_ylim(len(names), 0)
    ax.set_xticks([j + 0.5 for j in range(len(names))], names, rotation=45, ha="left")
    ax.set_yticks(
        [i + 0.5 for i in range(len(names))],
        [
            f"{n}/ ({sizes[n]})" if n != "kernel" else f"kernel, the root ({sizes[n]})"
            for n in names
        ],
    )
    ax.xaxis.tick_top()
    ax.set_xlabel("imported folder", labelpad=10)
    ax.xaxis.set_label_position("top")
    ax.set_ylabel("importing folder (modules)")
    ax.set_title(
        f"runner/: {len(edges)} modules, {sum(map(len, edges.values()))} imports, "
        f"longest chain {depth(edges)} modules.\nCells: imports from modules of the row to modules of "
        "the column; grey: the same layer (must stay empty).",
        fontsize=10,
        y=-0.12,
    )
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.import_graph")
    parser.add_argument("--png", type=Path, help="also draw the folder graph here")
    args = parser.parse_args(argv)
    edges = graph()
    print(report(edges))
    if args.png:
        draw(edges, args.png)
        print(f"drawn: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
