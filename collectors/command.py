"""Running the MTA's own tools (``postconf``, ``postqueue``, later ``exim``): argv lists with a
time limit, never a shell, failures as ``CommandError`` naming the command and what it said."""

from __future__ import annotations

import os
import selectors
import subprocess
from collections.abc import Callable, Iterator, Sequence

from collectors.deadline import Deadline

#: Longest output line accepted from a streamed command (a postqueue -j message is a few KiB).
MAX_LINE = 16 << 20


class CommandError(OSError):
    """A command could not be run, timed out or exited non-zero."""


def _describe(argv: Sequence[str]) -> str:
    return " ".join(argv)


def run(argv: Sequence[str], *, timeout: float = 10.0) -> str:
    """Run ``argv`` and return its standard output."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CommandError(f"{_describe(argv)}: {exc}") from None
    if done.returncode != 0:
        raise CommandError(f"{_describe(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _check_exit(argv: Sequence[str], returncode: int, stderr: str) -> None:
    if returncode != 0:
        raise CommandError(f"{_describe(argv)} exited {returncode}: {stderr}")


def stream(argv: Sequence[str], deadline: Deadline,
           check: Callable[[Sequence[str], int, str], None] = _check_exit) -> Iterator[bytes]:
    """Run ``argv`` and yield its standard output line by line, as it comes, within ``deadline``.

    At the deadline (or when the agent stops) the command is killed and ``ReadTimeout`` (or
    ``ReadCancelled``) raised. Once the output ends, ``check(argv, exit status, standard error)``
    decides whether the run failed (by raising); the default refuses a non-zero exit.
    """
    try:
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise CommandError(f"{_describe(argv)}: {exc}") from None
    assert proc.stdout is not None and proc.stderr is not None
    with proc, selectors.DefaultSelector() as selector:
        try:
            selector.register(proc.stdout, selectors.EVENT_READ)
            pending = b""
            while True:
                deadline.check()
                if not selector.select(deadline.wait()):
                    continue
                chunk = os.read(proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    break
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                if len(pending) > MAX_LINE:
                    raise CommandError(f"{_describe(argv)}: an output line longer than {MAX_LINE} bytes")
                yield from lines
            if pending:
                yield pending
            while proc.poll() is None:
                deadline.check()
                try:
                    proc.wait(deadline.wait())
                except subprocess.TimeoutExpired:
                    continue
        except BaseException:
            proc.kill()
            raise
        check(argv, proc.returncode, proc.stderr.read().decode(errors="replace").strip())
