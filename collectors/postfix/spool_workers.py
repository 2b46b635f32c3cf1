"""Worker processes that read queue files for the spool reader's first walk, one per CPU.

Decoding a queue file is Python work that holds the GIL, so threads would not use a second core;
processes do. They are plain ``python -m collectors.postfix.spool_workers`` children rather than
a ``multiprocessing`` pool: a spawned pool re-imports the agent's main module in every worker
(the whole agent, about a second), while this one imports only ``queue_file`` (standard library),
and a fork of the multi-threaded agent could inherit a lock held by another thread. Tasks are
pickles on the children's stdin, results length-prefixed pickles on their stdout; at most two
tasks per worker are in flight, so that neither pipe fills while the other side waits.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from collectors.deadline import Deadline
from collectors.postfix.queue_file import BatchEntry, QueueFiles, ReadBudget, read_batch

#: Tasks a worker holds at once: one being read, one waiting.
_IN_FLIGHT = 2
#: A result on a worker's stdout: its length, then the pickle. Read with ``os.read`` as it comes, so
#: that ``select`` never waits on data already buffered.
_FRAME = struct.Struct("<Q")
_READ = 1 << 20
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)


class WorkerError(RuntimeError):
    """A worker process ended without answering."""


class ReadWorkers:
    """``processes`` worker processes; ``submit()`` a batch of names with a tag, ``results()`` the
    read batches with their tags, as they come."""

    def __init__(self, processes: int) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))}
        self._procs: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(processes):
                self._procs.append(subprocess.Popen([sys.executable, "-m", "collectors.postfix.spool_workers"],
                                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env))
        except OSError as exc:
            self.close()
            raise WorkerError(f"cannot start a queue reader worker ({exc})") from exc
        self._tags: list[deque[Any]] = [deque() for _ in self._procs]
        self._fds = [proc.stdout.fileno() for proc in self._procs]  # type: ignore[union-attr]
        self._buffers = [bytearray() for _ in self._procs]  # results read in part

    def submit(self, tag: Any, files: QueueFiles, directory: str, names: list[str], files_per_second: float,
               deadline: Deadline) -> Iterator[tuple[Any, list[BatchEntry]]]:
        """Hand a batch to the least busy worker; first yields results while every worker is full."""
        while min(len(tags) for tags in self._tags) >= _IN_FLIGHT:
            yield from self._collect(deadline)
        n = min(range(len(self._procs)), key=lambda i: len(self._tags[i]))
        stdin = self._procs[n].stdin
        assert stdin is not None
        try:
            pickle.dump((files, directory, names, files_per_second, deadline.remaining()), stdin, protocol=5)
            stdin.flush()
        except BrokenPipeError:
            raise WorkerError(f"queue reader worker {self._procs[n].pid} ended "
                              f"(exit status {self._procs[n].wait()})") from None
        self._tags[n].append(tag)

    def results(self, deadline: Deadline) -> Iterator[tuple[Any, list[BatchEntry]]]:
        """Every result still to come."""
        while any(self._tags):
            yield from self._collect(deadline)

    def _collect(self, deadline: Deadline) -> Iterator[tuple[Any, list[BatchEntry]]]:
        """The results that have come, waiting (within the deadline) until there is one."""
        got = 0
        while not got:
            deadline.check()
            busy = {self._fds[i]: i for i, tags in enumerate(self._tags) if tags}
            readable, _, _ = select.select(list(busy), [], [], deadline.wait())
            for fd in readable:
                n = busy[fd]
                data = os.read(fd, _READ)
                if not data:
                    raise WorkerError(f"queue reader worker {self._procs[n].pid} ended "
                                      f"(exit status {self._procs[n].wait()})")
                buffer = self._buffers[n]
                buffer += data
                while len(buffer) >= _FRAME.size and len(buffer) >= _FRAME.size + (
                        size := _FRAME.unpack_from(buffer)[0]):
                    ok, value = pickle.loads(buffer[_FRAME.size:_FRAME.size + size])
                    del buffer[:_FRAME.size + size]
                    tag = self._tags[n].popleft()
                    if not ok:
                        raise value
                    got += 1
                    yield tag, value

    def close(self) -> None:
        """End the workers at once (a task in progress is abandoned)."""
        for proc in self._procs:
            proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()


def main() -> None:
    """A worker: read batches from stdin until it closes, answer each on stdout."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    budget: ReadBudget | None = None  # one for every task: the rate holds across batches
    while True:
        try:
            files, directory, names, files_per_second, seconds = pickle.load(stdin)
        except EOFError:
            return
        if budget is None or budget.rate != files_per_second:
            budget = ReadBudget(files_per_second, Deadline(seconds))
        budget.deadline = Deadline(seconds)
        try:
            answer: tuple[bool, object] = (True, read_batch(files, directory, names, budget))
        except Exception as exc:  # handed to the agent, which reports the scan as failed
            answer = (False, exc)
        data = pickle.dumps(answer, protocol=5)
        stdout.write(_FRAME.pack(len(data)) + data)
        stdout.flush()


if __name__ == "__main__":
    main()
