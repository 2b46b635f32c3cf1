"""A Postfix instance: its configuration model, discovery through ``postconf``, and its queue.

Everything the agent knows about finding and asking a Postfix instance lives here, for the queue
collector, ``qshape`` and (later) the actions that change Postfix's configuration.

The queue is read from the instance's ``showq`` service (``<queue_directory>/public/showq``),
the same service ``postqueue -p`` asks. When the socket cannot be opened from here (a host
install where the agent's user is not in ``postdrop``), ``postqueue -j`` is run instead: it is
setgid ``postdrop`` and asks the same service. A refused connection on an existing socket means
Postfix is stopped: that is reported as a failure, not papered over by postqueue's direct read.
With ``queue_source: spool`` the queue directories are read directly and incrementally
(``collectors/postfix/spool.py``); ``queue_reader()`` picks the reader an instance asks for.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from typing import Literal

from pydantic import Field, field_validator, model_validator

from collectors.command import CommandError, run
from collectors.deadline import Deadline
from collectors.postfix.showq import MailSystemDown, read_postqueue, read_showq_socket
from collectors.postfix.spool import DEFAULT_DUP_FILTER_LIMIT, DEFAULT_EMPTY_ADDRESS, SpoolQueueReader
from collectors.queue_model import QueueMessage
from collectors.settings import Duration, InstanceName, NonNegativeDuration, StrictModel
from collectors.spool_watch import DEFAULT_FULL_SCAN_INTERVAL

log = logging.getLogger("mtaq.postfix")

MTA = "postfix"
DEFAULT_QUEUE_DIRECTORY = "/var/spool/postfix"
#: What ``syslog_name`` is when nothing sets it: the ``mta_instance`` of a default instance.
DEFAULT_INSTANCE = "postfix"


class PostfixInstance(StrictModel):
    """One Postfix instance (``postfix.instances[]``)."""

    name: InstanceName = Field(default=DEFAULT_INSTANCE,
                               description="its syslog_name: the mta_instance label and lane rules' instance")
    config_dir: str | None = Field(default=None, description="postconf -c directory; None: Postfix's default")
    showq_path: str | None = Field(default=None, description="default: <queue_directory>/public/showq")
    postqueue: str = Field(default="postqueue", description="postqueue binary for the fallback")
    queue_source: Literal["showq", "spool"] = Field(
        default="showq", description="showq: ask Postfix's showq service; spool: read the queue directories "
                                     "incrementally (needs Postfix's uid or root)")
    queue_directory: str | None = Field(
        default=None, description="spool source: the queue directory; default: postconf's queue_directory")
    spool_files_per_second: float = Field(
        default=20000, ge=0, description="spool source: at most this many queue files opened per second; 0: no limit")
    spool_inotify: bool = Field(
        default=True, description="spool source: track changes with inotify and rescan only those; false: stat "
                                  "every queue file on every scan (filesystems where inotify misses changes, NFS)")
    spool_full_scan_interval: NonNegativeDuration = Field(
        default=DEFAULT_FULL_SCAN_INTERVAL, description="spool source with inotify: walk the whole queue at least "
                                                        "this often as a safety net; 0: only when inotify needs it")
    spool_processes: int | None = Field(
        default=None, ge=1, description="spool source: worker processes that read the queue files of the first "
                                        "scan; null: one per CPU the agent may use; 1: none")

    def postconf(self, *parameters: str) -> list[str]:
        """Values of ``parameters`` in this instance's configuration (raises ``CommandError``)."""
        argv = ["postconf", "-h", "-x", *(["-c", self.config_dir] if self.config_dir else []), *parameters]
        return run(argv).splitlines()

    def postqueue_command(self) -> list[str]:
        """The ``postqueue -j`` fallback command for this instance."""
        return [self.postqueue, *(["-c", self.config_dir] if self.config_dir else []), "-j"]


class PostfixSection(StrictModel):
    """The ``postfix:`` section: which instances' queues to read and how often."""

    enabled: bool | None = Field(default=None, description="null: on when a local Postfix is found")
    instances: list[PostfixInstance] = Field(default_factory=lambda: [PostfixInstance()])
    queue_scan_interval: Duration = 30.0
    queue_read_timeout: Duration | None = Field(
        default=None, description="a queue read that takes longer is abandoned (up 0); null: 80% of the interval")

    @field_validator("instances")
    @classmethod
    def _unique(cls, instances: list[PostfixInstance]) -> list[PostfixInstance]:
        names = [i.name for i in instances]
        if len(set(names)) != len(names):
            raise ValueError(f"instance names must be unique, got {names}")
        if not instances:
            raise ValueError("at least one instance is needed (or turn the postfix_queue collector off)")
        return instances

    @model_validator(mode="after")
    def _read_within_interval(self) -> PostfixSection:
        if self.queue_read_timeout is not None and self.queue_read_timeout > self.queue_scan_interval:
            raise ValueError(f"queue_read_timeout ({self.queue_read_timeout:g} s) must not exceed "
                             f"queue_scan_interval ({self.queue_scan_interval:g} s)")
        return self


def _postconf(instance: PostfixInstance, *parameters: str) -> list[str] | None:
    """``parameters`` of ``instance`` from postconf, or None (logged) when postconf cannot say."""
    try:
        values = instance.postconf(*parameters)
    except (CommandError, OSError) as exc:
        log.warning("postconf failed for instance %s (%s)", instance.name, exc)
        return None
    if len(values) != len(parameters):
        log.warning("postconf gave %d values for %d parameters of instance %s", len(values), len(parameters),
                    instance.name)
        return None
    return values


def _check_syslog_name(instance: PostfixInstance, syslog_name: str) -> None:
    if syslog_name != instance.name:
        log.warning("Postfix instance %s logs as %r: name it %r so that its queue and log series agree",
                    instance.name, syslog_name, syslog_name)


def spool_reader(instance: PostfixInstance) -> SpoolQueueReader:
    """The spool reader of ``instance``: its queue directory (configured, else postconf's) and
    showq's ``duplicate_filter_limit`` and ``empty_address_recipient`` (postconf's, else Postfix's defaults)."""
    values = _postconf(instance, "queue_directory", "syslog_name", "duplicate_filter_limit",
                       "empty_address_recipient")
    queue_directory, dup_limit, empty = DEFAULT_QUEUE_DIRECTORY, DEFAULT_DUP_FILTER_LIMIT, DEFAULT_EMPTY_ADDRESS
    if values is not None:
        queue_directory, syslog_name, limit, empty = values
        _check_syslog_name(instance, syslog_name)
        dup_limit = int(limit) if limit.isdigit() else DEFAULT_DUP_FILTER_LIMIT
    return SpoolQueueReader(instance.name, instance.queue_directory or queue_directory,
                            files_per_second=instance.spool_files_per_second, dup_filter_limit=dup_limit,
                            empty_address=empty, inotify=instance.spool_inotify,
                            full_scan_interval=instance.spool_full_scan_interval, processes=instance.spool_processes)


def queue_reader(instance: PostfixInstance) -> PostfixQueueReader | SpoolQueueReader:
    """The queue reader ``instance.queue_source`` asks for."""
    return spool_reader(instance) if instance.queue_source == "spool" else PostfixQueueReader(instance)


def postfix_present() -> bool:
    """Whether a local Postfix looks installed (for ``postfix.enabled: null``)."""
    return shutil.which("postconf") is not None or os.path.exists(
        os.path.join(DEFAULT_QUEUE_DIRECTORY, "public", "showq"))


class PostfixQueueReader:
    """Reads one instance's queue (a ``QueueReader``); the showq path is resolved once, here.

    A configured ``showq_path`` is used as it is: when it cannot be read, the instance is down,
    never silently read through another instance's ``postqueue``. A discovered one falls back to
    ``postqueue -j`` of the same instance (``-c`` its configuration directory).
    """

    def __init__(self, instance: PostfixInstance) -> None:
        self.instance = instance
        self.name = instance.name
        self.fallback = instance.showq_path is None
        self.showq_path = instance.showq_path or self._discover()
        self.source_info = ("showq", self.showq_path)

    def _discover(self) -> str:
        values = _postconf(self.instance, "queue_directory", "syslog_name")
        if values is None:
            log.warning("assuming queue directory %s for instance %s", DEFAULT_QUEUE_DIRECTORY, self.name)
            return os.path.join(DEFAULT_QUEUE_DIRECTORY, "public", "showq")
        queue_directory, syslog_name = values
        _check_syslog_name(self.instance, syslog_name)
        return os.path.join(queue_directory, "public", "showq")

    def preflight(self) -> list[str]:
        """A configured socket that does not exist (the discovered one may appear with Postfix)."""
        if not self.fallback and not os.path.exists(self.showq_path):
            return [f"postfix instance {self.name}: configured showq socket {self.showq_path} does not exist"]
        return []

    def source(self) -> str:
        """The socket and its fallback, if any."""
        if not self.fallback:
            return f"showq {self.showq_path} (configured; no fallback)"
        return f"showq {self.showq_path} (fallback: {' '.join(self.instance.postqueue_command())})"

    def read(self, deadline: Deadline) -> Iterator[QueueMessage]:
        """The showq socket, else (for a discovered socket) ``postqueue -j``; errors name both attempts."""
        try:
            messages = read_showq_socket(self.showq_path, deadline)
        except ConnectionRefusedError as exc:
            raise MailSystemDown(f"Postfix is not running (showq socket {self.showq_path}: {exc})") from None
        except OSError as socket_error:
            if not self.fallback:
                raise OSError(f"configured showq socket {self.showq_path}: {socket_error.strerror or socket_error}") \
                    from None
            command = self.instance.postqueue_command()
            try:
                self.source_info = ("postqueue", " ".join(command))
                yield from read_postqueue(command, deadline)
            except OSError as fallback_error:
                raise OSError(f"showq socket {self.showq_path}: {socket_error}; "
                              f"fallback {' '.join(command)}: {fallback_error}") from None
            return
        self.source_info = ("showq", self.showq_path)
        yield from messages
