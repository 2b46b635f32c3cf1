"""Running the MTA's own tools (``postconf``, ``postqueue``, later ``exim``): argv lists with a
timeout, never a shell, failures as ``CommandError`` naming the command and what it said."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator, Sequence


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


def stream(argv: Sequence[str], *, timeout: float = 120.0,
           check: Callable[[Sequence[str], int, str], None] = _check_exit) -> Iterator[bytes]:
    """Run ``argv`` and yield its standard output line by line, as it comes.

    Once the output ends, ``check(argv, exit status, standard error)`` decides whether the run
    failed (by raising); the default refuses a non-zero exit.
    """
    try:
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise CommandError(f"{_describe(argv)}: {exc}") from None
    with proc:
        assert proc.stdout is not None
        yield from proc.stdout
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise CommandError(f"{_describe(argv)}: no exit within {timeout:g} s") from None
        check(argv, proc.returncode, err.decode(errors="replace").strip())
