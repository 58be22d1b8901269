"""What ``execve`` will accept, read the kernel's way: pure functions on a file's first bytes
(:func:`shebang`, :func:`env_program`, :func:`elf_refusal`, :func:`elf_interpreter`), for
``--then``'s checks before migrating (:mod:`runner.cli.then` does the reading).

- A ``#!`` line (Linux's ``binfmt_script``): the first 256 bytes, up to the newline; the
  interpreter is the first word (up to a space, a tab or a NUL), and the rest of the line,
  trimmed of spaces and tabs, is ONE optional argument: ``#!/usr/bin/env python3 -u``
  gives env the single argument ``"python3 -u"``, which it takes for a program's name.
- ``/usr/bin/env`` (GNU coreutils): that argument is the program, unless it starts with
  ``-``: then it is options, and only ``-S`` (``--split-string``) splits the rest into
  words (options, ``NAME=VALUE`` assignments, then the program and its arguments).
- An ELF binary (``binfmt_elf``): the class, byte order and machine this process runs,
  type EXEC or DYN, program headers of the right size within the file, and the
  interpreter its ``PT_INTERP`` names (the dynamic loader).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

#: how much of a file the kernel reads to pick its format (``BINPRM_BUF_SIZE``)
BUF_SIZE = 256
#: the start of an ELF binary
ELF = b"\x7fELF"
#: how deep ``#!`` interpreters may nest (``BINPRM_MAX_RECURSION``)
MAX_NESTING = 4

#: what ends the interpreter's name on a #! line
_TERMINATORS = (b" ", b"\t", b"\0")
#: GNU env's short options that may come before ``S`` in one word (``-vS``)
_BEFORE_S = set("iv0")
#: env options that take the next word as their value
_WITH_VALUE = {"-u", "--unset", "-C", "--chdir"}


class Refused(ValueError):
    """Why ``execve`` (or the program it starts) will not run the file."""


def shebang(head: bytes) -> tuple[str, str | None]:
    """The interpreter and its one optional argument of a file starting with ``#!`` (its
    first :data:`BUF_SIZE` bytes in ``head``), as Linux reads them. Raises :class:`Refused`
    where the kernel answers ENOEXEC (no interpreter, or one cut by the 256-byte limit)."""
    buf = head[:BUF_SIZE].ljust(BUF_SIZE, b"\0")  # the kernel's buffer starts zeroed
    end = buf.find(b"\n")
    if end < 0:
        end = BUF_SIZE - 1
        if _terminator(buf, 2 + _leading_blanks(buf[2:end]), end) < 0:
            raise Refused("its #! line's interpreter runs past the 256 bytes the kernel reads")
    line = buf[2:end].strip(b" \t")
    cut = _terminator(line, 0, len(line))
    name = line[:cut] if cut >= 0 else line
    if not name:
        raise Refused("its #! line names no interpreter")
    argument = None
    if cut >= 0 and line[cut : cut + 1] != b"\0":
        argument = line[cut + 1 :].lstrip(b" \t").split(b"\0", 1)[0]
    return _text(name), None if argument is None else _text(argument)


def env_program(argument: str | None) -> str | None:
    """The program ``/usr/bin/env`` will look for on PATH, given the #! line's one argument.
    ``None`` when the program cannot be known before running (a ``${VAR}`` in ``-S``).
    Raises :class:`Refused` when env will not start the app: no program named, options
    without ``-S``, a name with spaces in it, an assignment where the program should be."""
    if argument is None:
        raise Refused("its #! line runs env with no program (env would print the environment)")
    split = _split_string(argument)
    if split is not None:
        return _split_program(split)
    if argument.startswith("-"):
        raise Refused(
            f"its #! line gives env the options {argument!r}: the kernel passes the rest of "
            "the line as ONE argument, so env refuses it. Use env -S: #!/usr/bin/env -S " + argument
        )
    if "=" in argument:
        raise Refused(
            f"its #! line gives env {argument!r}, which env takes for a variable assignment, "
            "not a program. Use env -S: #!/usr/bin/env -S " + argument
        )
    if any(blank in argument for blank in " \t"):
        raise Refused(
            f"its #! line makes env look for a program named {argument!r}: the kernel passes "
            "the rest of the line as ONE argument. Use env -S: #!/usr/bin/env -S " + argument
        )
    return argument


def _split_string(argument: str) -> str | None:
    """The string of env's ``-S`` (``-S STRING``, ``-vS STRING``, ``--split-string=STRING``)
    when the #! argument is one, else ``None``."""
    if argument.startswith("--split-string="):
        return argument.partition("=")[2]
    if not argument.startswith("-") or argument.startswith("--"):
        return None
    flags, s, rest = argument[1:].partition("S")
    return rest if s and set(flags) <= _BEFORE_S else None


def _split_program(string: str) -> str | None:
    """The program in env's ``-S`` string: the first word after the options and the
    ``NAME=VALUE`` assignments."""
    import shlex  # only for an env -S line: not on every run's path

    if "${" in string:
        return None  # env expands it: known only when it runs
    try:
        words = shlex.split(string.replace("\\_", " "), comments=True)
    except ValueError as exc:
        raise Refused(f"env cannot split its #! line's -S string ({exc})") from None
    at = 0
    while at < len(words) and words[at].startswith("-") and words[at] != "--":
        at += 2 if words[at] in _WITH_VALUE else 1
    at += at < len(words) and words[at] == "--"
    while at < len(words) and "=" in words[at]:
        at += 1
    if at >= len(words):
        raise Refused("its #! line's env -S names no program")
    return words[at]


class Elf(NamedTuple):
    """What of an ELF header the kernel checks first."""

    klass: int  # 1: 32-bit, 2: 64-bit
    data: int  # 1: little-endian, 2: big-endian
    machine: int
    kind: int  # e_type
    phoff: int
    phentsize: int
    phnum: int

    @property
    def order(self) -> str:
        return "<" if self.data == 1 else ">"


#: e_type EXEC and DYN (a position-independent executable, or the loader itself)
_RUNNABLE = (2, 3)
#: a program header's size in each class, and the ``PT_INTERP`` type
_PHENTSIZE = {1: 32, 2: 56}
_PT_INTERP = 3


def elf_header(head: bytes) -> Elf | None:
    """The header of an ELF file's first bytes (at least 64); ``None`` when it is too short
    or its class or byte order is unknown."""
    if len(head) < 52 or not head.startswith(ELF) or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    klass, order = head[4], "<" if head[5] == 1 else ">"
    kind, machine = struct.unpack_from(order + "HH", head, 16)
    if klass == 2:
        if len(head) < 64:
            return None
        (phoff,) = struct.unpack_from(order + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
    else:
        (phoff,) = struct.unpack_from(order + "I", head, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
    return Elf(klass, head[5], machine, kind, phoff, phentsize, phnum)


def elf_refusal(head: bytes, size: int, this: Elf | None) -> str | None:
    """Why the kernel will not load the ELF file that starts with ``head`` and is ``size``
    bytes long, on the machine whose own binary's header is ``this`` (``None``: unknown,
    class and machine not compared); ``None`` when it will."""
    elf = elf_header(head)
    if elf is None:
        return "its ELF header is cut short or invalid"
    if this is not None and (elf.klass, elf.data, elf.machine) != (
        this.klass,
        this.data,
        this.machine,
    ):
        return (
            f"it is an ELF binary for another machine ({_describe(elf)}; this one runs "
            f"{_describe(this)})"
        )
    if elf.kind not in _RUNNABLE:
        return f"it is an ELF file of type {elf.kind} (not an executable: a core or object file?)"
    if elf.phentsize != _PHENTSIZE[elf.klass] or not 0 < elf.phnum <= 65536 // elf.phentsize:
        return "its ELF program headers are invalid"
    if elf.phoff + elf.phnum * elf.phentsize > size:
        return "it is cut short (its ELF program headers lie beyond its end)"
    return None


def elf_interpreter(elf: Elf, headers: bytes) -> tuple[int, int] | None:
    """Where the interpreter's path lies in the file (offset, size), from its program
    ``headers`` (``elf.phnum`` of them); ``None`` for a static binary."""
    offsets = (4, 16) if elf.klass == 1 else (8, 32)
    unsigned = "I" if elf.klass == 1 else "Q"
    for at in range(0, elf.phnum * elf.phentsize, elf.phentsize):
        (kind,) = struct.unpack_from(elf.order + "I", headers, at)
        if kind == _PT_INTERP:
            (offset,) = struct.unpack_from(elf.order + unsigned, headers, at + offsets[0])
            (size,) = struct.unpack_from(elf.order + unsigned, headers, at + offsets[1])
            return offset, size
    return None


def _describe(elf: Elf) -> str:
    order = "little" if elf.data == 1 else "big"
    return f"{32 * elf.klass}-bit {order}-endian, machine {elf.machine}"


def _terminator(data: bytes, start: int, end: int) -> int:
    """Where the first space, tab or NUL lies in ``data[start:end]`` (-1: none)."""
    found = [at for at in (data.find(t, start, end) for t in _TERMINATORS) if at >= 0]
    return min(found, default=-1)


def _leading_blanks(data: bytes) -> int:
    return len(data) - len(data.lstrip(b" \t"))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")
