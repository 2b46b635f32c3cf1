"""Standard input as a tailer source: a blocking read in its own thread, chunks through a bounded
queue, so that the pass (and so the sink) still runs on the tailer's thread only."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import IO, Any

#: Chunks buffered between the reader thread and the pass; a full queue pushes back on the
#: writer instead of buffering without bound.
QUEUE_CHUNKS = 16

#: What ``next_chunk()`` returns when nothing has arrived yet.
EMPTY = b""


class StdinReader:
    """Reads ``stream`` (text or binary) in a daemon thread; ``next_chunk()`` hands the bytes over
    without blocking, ``None`` once the input has ended."""

    def __init__(self, stream: IO[bytes] | IO[str], read_size: int, wake: Callable[[], None],
                 on_error: Callable[[BaseException], None]) -> None:
        self._stream: Any = getattr(stream, "buffer", stream)  # text stdin: read its bytes
        self._read_size = read_size
        self._wake = wake
        self._on_error = on_error
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_CHUNKS)
        self._thread = threading.Thread(target=self._read, name="mtaq-tailer-stdin", daemon=True)

    def start(self) -> None:
        """Start reading."""
        self._thread.start()

    def next_chunk(self) -> bytes | None:
        """The next chunk, ``EMPTY`` if none is waiting, None at the end of the input."""
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return EMPTY

    def _read(self) -> None:
        read = getattr(self._stream, "read1", None) or self._stream.read
        try:
            while True:
                chunk = read(self._read_size)
                if not chunk:
                    break
                self._queue.put(chunk)
                self._wake()
        except Exception as exc:  # report it on the source and end the stream
            self._on_error(exc)
        finally:
            self._queue.put(None)
            self._wake()
