"""fds 1 and 2 captured while project code runs (runner/observe/descriptors.py): real pipes,
real child processes, in this process (pytest's own fd capture is what fds 1 and 2 are)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from runner.observe import descriptors


@pytest.fixture
def lines():
    got: list[tuple[str, str]] = []

    def sink(stream: str, text: str) -> None:
        got.append((stream, text))

    descriptors.sinks.append(sink)
    yield got
    descriptors.sinks.remove(sink)


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def test_child_processes_raw_writes_partial_lines_and_bytes_become_lines(lines):
    before = (_identity(1), _identity(2))
    with descriptors.captured():
        subprocess.run(["sh", "-c", "echo from-a-child; echo to-stderr >&2"], check=True)
        os.write(1, b"raw \xff\xfe bytes\nhalf a ")
        os.write(1, b"line\nno newline at the end")
    assert (_identity(1), _identity(2)) == before
    assert sorted(lines) == sorted(
        [
            ("stdout", "from-a-child"),
            ("stderr", "to-stderr"),
            ("stdout", "raw \\xff\\xfe bytes"),
            ("stdout", "half a line"),
            ("stdout", "no newline at the end"),
        ]
    )


def test_more_than_a_pipe_holds_does_not_block_the_writer(lines):
    with descriptors.captured():  # 1 MiB: a pipe holds 64 KiB; the drain must keep up
        subprocess.run(
            [sys.executable, "-c", "print(('y' * 1023 + '\\n') * 1024, end='')"], check=True
        )
    assert lines == [("stdout", "y" * 1023)] * 1024


def test_a_child_that_outlives_the_capture_is_not_waited_for(lines):
    before = _identity(1)
    with descriptors.captured():
        child = subprocess.Popen(
            ["sh", "-c", "echo before; read _; echo after"], stdin=subprocess.PIPE
        )
    try:
        # captured() returned while the child still runs and holds the pipe: the fds are back
        assert child.poll() is None and _identity(1) == before
        child.communicate(b"go\n", timeout=30)  # its late write is read and dropped
    finally:
        child.kill()
        child.wait()
    assert ("stdout", "after") not in lines


def test_the_fds_are_put_back_when_the_code_raises(lines):
    before = (_identity(1), _identity(2))
    with pytest.raises(RuntimeError), descriptors.captured():
        os.write(2, b"said before failing\n")
        raise RuntimeError("the project's code failed")
    assert (_identity(1), _identity(2)) == before
    assert lines == [("stderr", "said before failing")]


def test_without_an_active_output_capture_nothing_is_captured():
    before = _identity(1)
    with descriptors.captured():
        assert _identity(1) == before


@pytest.mark.parametrize("pad", [descriptors.MAX_LINE - 5, 2 * descriptors.MAX_LINE - 5])
def test_a_long_line_is_never_cut_across_a_secret(lines, monkeypatch, pad):
    """Each piece of a line longer than MAX_LINE is redacted alone: a secret across the cut
    would pass as two halves, neither of them the secret."""
    from runner.observe import logs

    secret = "hunter2-Secret"
    monkeypatch.setattr(logs, "_configured", [secret], raising=False)
    with descriptors.captured():
        os.write(1, b"x" * pad + secret.encode() + b"y" * 3 * descriptors.MAX_LINE + b"\n")
    pieces = [text for _stream, text in lines]
    assert "".join(pieces) == "x" * pad + secret + "y" * 3 * descriptors.MAX_LINE
    assert len(pieces) > 1 and [p for p in pieces if secret in p]


def test_the_capture_pipes_are_as_large_as_the_system_lets_a_process_make_them(lines):
    """A burst faster than the drain fills a 1 MiB pipe (pipe-max-size) instead of 64 KiB."""
    import fcntl

    with open("/proc/sys/fs/pipe-max-size", "rb") as limit:
        most = int(limit.read())
    with descriptors.captured():
        sizes = [fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) for fd in (1, 2)]
    assert sizes == [most, most]
