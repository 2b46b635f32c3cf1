"""An Exim instance: its configuration model, discovery through ``exim -bP``, and its queue.

The queue is read from the spool (``collectors/exim/spool.py``): ``input/`` and ``msglog/`` are
``drwxr-x---`` and owned by the Exim user and group (``Debian-exim`` on Debian), so the agent
runs in that group (a sidecar mounts the spool read-only with that group id). When ``input/``
cannot be listed for lack of permission, ``exim -bp`` is run instead: it is setuid root, but
lists the queue only for admin users (root, the Exim user, members of the Exim group or of
``admin_groups``) unless Exim's ``queue_list_requires_admin = false``. A spool directory that
does not exist is a failure, never papered over by the fallback.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping

from pydantic import Field, field_validator, model_validator

from collectors.command import CommandError, run, stream
from collectors.deadline import Deadline
from collectors.exim.queue_listing import decode_bp
from collectors.exim.spool import (
    SPOOL_DIRECTORIES,
    Found,
    Known,
    SpoolState,
    Watch,
    changed_ids,
    spool_changes,
    spool_updates,
    unwatched,
)
from collectors.queue_model import QueueLedger, QueueMessage
from collectors.settings import Duration, InstanceName, NonNegativeDuration, StrictModel
from collectors.spool_watch import DEFAULT_FULL_SCAN_INTERVAL, ChangeTracker

log = logging.getLogger("mtaq.exim")

MTA = "exim"
#: The ``mta_instance`` of an Exim instance that is not named otherwise.
DEFAULT_INSTANCE = "exim"

#: Debian's spool (``/var/spool/exim`` elsewhere), used when ``exim -bP`` cannot say.
DEFAULT_SPOOL = "/var/spool/exim4"
_BINARIES = ("exim4", "exim")
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def find_binary() -> str:
    """The Exim binary: ``exim4`` (Debian) or ``exim`` on the PATH or in an sbin directory."""
    for name in _BINARIES:
        found = shutil.which(name) or next(
            (path for path in (os.path.join(d, name) for d in _SBIN) if os.access(path, os.X_OK)), None)
        if found:
            return found
    return _BINARIES[0]


class EximInstance(StrictModel):
    """One Exim instance (``exim.instances[]``)."""

    name: InstanceName = Field(default=DEFAULT_INSTANCE, description="the mta_instance label and lane rules' instance")
    spool_directory: str | None = Field(default=None,
                                        description="null: exim -bP spool_directory, else /var/spool/exim4")
    binary: str | None = Field(default=None, description="null: exim4 or exim from the PATH or /usr/sbin")
    config_file: str | None = Field(default=None, description="exim -C for -bP and -bp; null: Exim's own")
    log_path: str | None = Field(default=None, description="the main log to tail; null: not tailed")
    throttle_dir: str | None = Field(default=None, description="where the exim_throttle/exim_pause actions write")
    spool_inotify: bool = Field(
        default=True, description="track spool changes with inotify and rescan only those; false: stat every "
                                  "-H file on every scan (filesystems where inotify misses changes, NFS)")
    spool_full_scan_interval: NonNegativeDuration = Field(
        default=DEFAULT_FULL_SCAN_INTERVAL, description="with inotify: walk the whole spool at least this often as a "
                                                        "safety net; 0: only when inotify needs it")

    def command(self, *args: str) -> list[str]:
        """``exim [-C file] args`` for this instance."""
        return [self.binary or find_binary(), *(["-C", self.config_file] if self.config_file else []), *args]


class EximSection(StrictModel):
    """The ``exim:`` section: which Exim instances to read and how often."""

    enabled: bool | None = Field(default=None, description="null: on when instances are configured; false: off, "
                                                            "log too")
    instances: list[EximInstance] = Field(default_factory=list)
    queue_scan_interval: Duration = 30.0
    queue_read_timeout: Duration | None = Field(
        default=None, description="a queue read that takes longer is abandoned (up 0); null: 80% of the interval")
    log_checkpoint_file: str | None = Field(default=None, description="inode + offset per main log, for restarts")

    @field_validator("instances")
    @classmethod
    def _unique(cls, instances: list[EximInstance]) -> list[EximInstance]:
        names = [i.name for i in instances]
        if len(set(names)) != len(names):
            raise ValueError(f"instance names must be unique, got {names}")
        return instances

    @model_validator(mode="after")
    def _read_within_interval(self) -> EximSection:
        if self.queue_read_timeout is not None and self.queue_read_timeout > self.queue_scan_interval:
            raise ValueError(f"queue_read_timeout ({self.queue_read_timeout:g} s) must not exceed "
                             f"queue_scan_interval ({self.queue_scan_interval:g} s)")
        return self

    def queue_enabled(self) -> bool:
        """Whether the queue collector runs by default: ``enabled``, else when instances are configured."""
        return self.enabled if self.enabled is not None else bool(self.instances)

    def log_enabled(self) -> bool:
        """Whether the log collector runs by default: an instance has a ``log_path`` (and ``enabled``
        is not false)."""
        return self.enabled is not False and any(i.log_path for i in self.instances)


class EximQueueReader:
    """Reads one instance's queue (an ``IncrementalQueueReader``): the spool, or ``exim -bp`` when
    the spool is not readable for lack of permission. The spool directory is resolved once, here."""

    def __init__(self, instance: EximInstance) -> None:
        self.instance = instance
        self.name = instance.name
        self.spool_directory = instance.spool_directory or self._discover()
        self.source_info = ("spool", self.spool_directory)
        # What the last scan found, so that the next reads only what changed (see ``spool.py``).
        self._state = SpoolState()
        self._ledger: QueueLedger | None = None
        self.tracker = ChangeTracker(f"exim instance {self.name}", self.spool_directory, SPOOL_DIRECTORIES,
                                     inotify=instance.spool_inotify,
                                     full_scan_interval=instance.spool_full_scan_interval)
        self.last_read = 0  # messages the last complete scan read (the others were unchanged)
        self.walk: str | None = None  # why the last scan walked the spool; None: it was an update

    def _discover(self) -> str:
        try:
            output = run(self.instance.command("-bP", "spool_directory"))
        except CommandError as exc:
            log.warning("exim -bP failed for instance %s (%s); assuming %s", self.name, exc, DEFAULT_SPOOL)
            return DEFAULT_SPOOL
        return output.partition("=")[2].strip() or DEFAULT_SPOOL

    def preflight(self) -> list[str]:
        """A spool directory that does not exist."""
        if not os.path.isdir(self.spool_directory):
            return [f"exim instance {self.name}: spool directory {self.spool_directory} does not exist"]
        return []

    def source(self) -> str:
        """The spool, how changes are found, and the fallback."""
        return (f"spool {self.spool_directory} (incremental: {self.tracker.describe()}; "
                f"fallback: {' '.join(self.instance.command('-bp'))})")

    def read(self, deadline: Deadline) -> Iterator[QueueMessage]:
        """Every message, each read afresh."""
        return (message for *_, message in self._found(deadline, {}) if message is not None)

    def scan(self, deadline: Deadline, ledger: QueueLedger) -> None:
        """Bring ``ledger`` up to date: a walk of the spool (unchanged messages are not read again),
        or, between walks, only the messages whose files inotify saw change (see
        ``collectors/spool_watch.py``); every message when the listing stands in for the spool."""
        state = self._state
        if ledger is not self._ledger:  # a new ledger starts from nothing
            state.clear()
            self.tracker.warm = False
            self._ledger = ledger
        changes = self.tracker.take()
        self.walk = changes.walk
        done = False
        try:
            if changes.walk is None:
                scope = changed_ids(changes.files, changes.defer_logs) | state.in_progress
                found = spool_updates(self.spool_directory, scope, deadline, state.known)
                self.last_read = state.apply(found, ledger, scope)
            else:
                self.last_read = state.apply(self._found(deadline, state.known, self.tracker.watch), ledger)
            done = True
        finally:
            if not done:
                self.tracker.undone(changes)
        if self.source_info[0] == "spool":
            self.tracker.done(changes)
        else:  # the listing stood in for the spool, nothing was watched: the next scan walks too
            self.tracker.warm = False

    def close(self) -> None:
        """Stop tracking changes (the inotify thread and its watches); what the last scan found
        stays for the next."""
        self.tracker.close()

    def _found(self, deadline: Deadline, known: Mapping[str, Known], watch: Watch = unwatched) -> Iterator[Found]:
        """The spool's messages (without a record when as ``known`` has them; each directory given to
        ``watch`` before it is listed), else (permission denied) ``exim -bp``'s; errors name both
        attempts."""
        try:
            found = spool_changes(self.spool_directory, deadline, known, watch)
        except PermissionError as spool_error:
            command = self.instance.command("-bp")
            self.source_info = ("exim_bp", " ".join(command))
            try:
                for message in decode_bp(stream(command, deadline), time.time()):
                    yield message.queue_id, None, None, message
            except (OSError, ValueError) as fallback_error:
                raise OSError(f"spool {self.spool_directory}: {spool_error.strerror}; fallback {' '.join(command)}: "
                              f"{fallback_error}") from None
            return
        self.source_info = ("spool", self.spool_directory)
        yield from found
