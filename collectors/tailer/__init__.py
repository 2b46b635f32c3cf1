"""Follow log files (and stdin) through rotation, truncation and restarts, MTA-agnostic.

The Postfix and Exim log collectors hand a :class:`Tailer` their paths and a ``sink``; the tailer
turns bytes into batches of raw lines and keeps its own counters (``stats``). It never parses.

How a file is followed (``SPEC.md`` §9, ``postfix-anchors.md`` §5 row 2 and §10.2):

- Correctness comes from the poll pass alone (:meth:`Tailer.poll_once`): read the open fd to EOF,
  then ``stat()`` the path and compare device/inode and size with the fd. inotify only
  wakes the loop early; when it cannot watch a directory the loop simply polls.
- Rename + create (logrotate ``create``, ``postfix logrotate``'s ``maillog_file.YYYYMMDD-HHMMSS``):
  when the path names a new inode, the old fd is drained to EOF first, then the new file is read
  from offset 0. The old fd stays open and is drained on every pass for ``rotate_grace`` seconds
  after it last grew, because the writer (rsyslog until its postrotate HUP, postlogd until
  reopened) may keep appending to it for a while; then its final partial line is flushed as a
  line and it is closed.
- Copytruncate: the same inode becoming shorter than our offset means truncation; the held
  partial line is flushed and the file is re-read from 0. Lines appended between our last pass and
  the truncation exist only in logrotate's copy: copytruncate itself loses them, and we never read
  the copy, so nothing is counted twice. A file truncated and regrown past our offset between two
  passes cannot be told from growth; the poll interval bounds that window.
- Deleted file: the old fd keeps being drained; once the path reappears it is read from 0. A
  deleted file that stays idle for ``rotate_grace`` is closed so its disk space can be freed.
- Missing or unreadable path: the error is kept in ``stats[source].last_error`` and the open is
  retried on every pass; the tailer recovers by itself.
- Lines longer than ``max_line_bytes`` are delivered cut to that length and the rest of the line
  is discarded, so memory stays bounded and the consumer counts them as unparsed.

Checkpoint and delivery guarantee: ``checkpoint_path`` holds JSON ``{path: {inode, dev, offset,
...}}``, written atomically (temp file, fsync, ``os.replace``, directory fsync) at most every
``checkpoint_interval`` seconds after a batch, and on :meth:`Tailer.stop`. The offset recorded for
a file is only ever the end of lines that ``sink()`` has already returned from, so a crash never
skips a line: delivery is *at least once*, and after a crash the lines of the last
uncheckpointed interval are delivered again. After a clean :meth:`Tailer.stop` the checkpoint is
exact and nothing is delivered twice. A held partial line is not part of the offset, so a restart
re-reads it and delivers it whole. On restart a checkpointed inode that is no longer at the path is
searched for among the path's siblings (``mail.log.1``, ``mail.log-20240101``,
``maillog.20240101-120000``) and drained from its offset before the new file is read from 0. A
fingerprint (CRC of the file's first bytes) guards against a recycled inode number.

Limits, by design: a file that is created and rotated away (or deleted) between two passes is
never opened, so its lines are lost (two rotations within one ``poll_interval``; inotify makes
this unlikely, not impossible). Lines a writer appends to a rotated file more than
``rotate_grace`` seconds after it last grew are not read. Rotated files are looked for on
restart only in the path's own directory (not logrotate's ``olddir``) and only uncompressed.
Use one checkpoint file per Tailer: each write replaces the whole file.

Modules: ``follow`` (the Tailer: passes, rotation, truncation), ``checkpoint`` (positions on
disk), ``source`` (per-path state and counters), ``stdin`` and ``wake`` (inotify).
"""

from collectors.tailer.follow import Sink, Tailer
from collectors.tailer.source import STDIN, SourceStats

__all__ = ["STDIN", "Sink", "SourceStats", "Tailer"]
