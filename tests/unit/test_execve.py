"""``--then``'s reading of what ``execve`` accepts (runner.cli.execve, runner.cli.then.ready),
each refusal checked against the real kernel: what ready() refuses, execve refuses too (or the
program it starts fails), and what it lets through runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from runner.cli import execve
from runner.cli.then import ready
from runner.errors import ConfigError


def _app(tmp_path, body: bytes):
    app = tmp_path / "app"
    app.write_bytes(body)
    app.chmod(0o755)
    return str(app)


def _runs(path: str, timeout: float = 30) -> bool:
    """Whether the kernel (and env) start it: the script prints 'started'. A script whose
    #! line makes env execute the script again loops until killed: it never starts."""
    try:
        proc = subprocess.run(
            [path], capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and b"started" in proc.stdout


PY = b"\nimport sys; print('started')\n"
SH = b"\necho started\n"


@pytest.mark.parametrize(
    "body",
    [
        b"#!/usr/bin/env python3 -u" + PY,  # env looks for 'python3 -u' (attack-final 4)
        b"#!/usr/bin/env -i python3" + PY,  # options without -S: env refuses them
        b"#!/usr/bin/env A=1 python3" + PY,  # an assignment: env runs the script again
        b"#!/usr/bin/env -S no-such-program-xyz -u" + PY,
        b"#!/usr/bin/env -S A=1" + PY,  # no program
        b"#!/bin/sh\r" + SH,  # a CRLF script: the kernel looks for '/bin/sh\r'
        b"#!/" + b"a" * 300 + SH,  # the interpreter cut by the 256-byte buffer
        b"\x7fELF" + b"garbage" * 4,  # attack-final 5
    ],
    ids=[
        "env-option",
        "env-i",
        "env-assignment",
        "env-S-missing",
        "env-S-none",
        "crlf",
        "long",
        "elf",
    ],
)
def test_what_ready_refuses_the_kernel_refuses(body, tmp_path):
    app = _app(tmp_path, body)
    with pytest.raises(ConfigError):
        ready([app])
    assert not _runs(app, timeout=3)


@pytest.mark.parametrize(
    "body",
    [
        b"#!/usr/bin/env python3" + PY,
        b"#!/usr/bin/env -S python3 -u" + PY,
        b"#!/usr/bin/env -S -i PATH=/usr/bin:/bin A=1 sh -e" + SH,
        b"#!/usr/bin/env -vS python3" + PY,
        b"#!   /bin/sh   -eu   " + SH,
        b"#!/bin/sh",  # no newline: the kernel's zeroed buffer ends the name
    ],
    ids=["env", "env-S", "env-S-options", "env-vS", "blanks", "no-newline"],
)
def test_what_ready_lets_through_runs(body, tmp_path):
    app = _app(tmp_path, body)
    assert ready([app]) == app
    if body != b"#!/bin/sh":  # (it runs, and prints nothing)
        assert _runs(app)


def test_an_elf_binary_of_this_machine_runs_and_a_cut_or_foreign_one_is_refused(tmp_path):
    binary = open(os.path.realpath(sys.executable), "rb").read()
    assert ready([_app(tmp_path, binary)])
    cut = binary[:100]  # the header, without its program headers
    with pytest.raises(ConfigError, match="cut short"):
        ready([_app(tmp_path, cut)])
    foreign = bytearray(binary[:64])
    foreign[18:20] = (183 if foreign[18] != 183 else 62).to_bytes(2, "little")  # aarch64
    assert execve.elf_refusal(bytes(foreign), len(binary), execve.elf_header(binary[:64]))
    relocatable = bytearray(binary[:64])
    relocatable[16:18] = (1).to_bytes(2, "little")  # ET_REL: an object file
    assert "type 1" in (execve.elf_refusal(bytes(relocatable), len(binary), None) or "")


def test_a_shebang_is_read_as_the_kernel_reads_it():
    assert execve.shebang(b"#!/usr/bin/env python3 -u\n") == ("/usr/bin/env", "python3 -u")
    assert execve.shebang(b"#! \t/bin/sh \t-e  x \t\n") == ("/bin/sh", "-e  x")
    assert execve.shebang(b"#!/bin/sh") == ("/bin/sh", None)
    assert execve.shebang(b"#!/bin/sh\0 -x\n") == ("/bin/sh", None)
    with pytest.raises(execve.Refused):
        execve.shebang(b"#!   \n")
    assert execve.env_program("-S -u X -C / -- A=1 B=2 prog -x") == "prog"
    assert execve.env_program("-S ${APP} -x") is None  # env expands it: unknown here
