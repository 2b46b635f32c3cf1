"""A Postfix instance: its configuration model, discovery through ``postconf``, and its queue.

Everything the agent knows about finding and asking a Postfix instance lives here, for the queue
collector, ``qshape`` and (later) the actions that change Postfix's configuration.

The queue is read from the instance's ``showq`` service (``<queue_directory>/public/showq``),
the same service ``postqueue -p`` asks. When the socket cannot be opened from here (a host
install where the agent's user is not in ``postdrop``), ``postqueue -j`` is run instead: it is
setgid ``postdrop`` and asks the same service. A refused connection on an existing socket means
Postfix is stopped: that is reported as a failure, not papered over by postqueue's direct read.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator, model_validator

from collectors.command import CommandError, run
from collectors.deadline import Deadline
from collectors.postfix.showq import MailSystemDown, read_postqueue, read_showq_socket
from collectors.queue_model import QueueMessage
from collectors.settings import Duration, StrictModel

log = logging.getLogger("mtaq.postfix")

MTA = "postfix"
DEFAULT_QUEUE_DIRECTORY = "/var/spool/postfix"
#: What ``syslog_name`` is when nothing sets it: the ``mta_instance`` of a default instance.
DEFAULT_INSTANCE = "postfix"

InstanceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class PostfixInstance(StrictModel):
    """One Postfix instance (``postfix.instances[]``)."""

    name: InstanceName = Field(default=DEFAULT_INSTANCE,
                               description="its syslog_name: the mta_instance label and lane rules' instance")
    config_dir: str | None = Field(default=None, description="postconf -c directory; None: Postfix's default")
    showq_path: str | None = Field(default=None, description="default: <queue_directory>/public/showq")
    postqueue: str = Field(default="postqueue", description="postqueue binary for the fallback")

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
        try:
            queue_directory, syslog_name = self.instance.postconf("queue_directory", "syslog_name")
        except (CommandError, ValueError) as exc:
            log.warning("postconf failed for instance %s (%s); assuming %s", self.name, exc, DEFAULT_QUEUE_DIRECTORY)
            return os.path.join(DEFAULT_QUEUE_DIRECTORY, "public", "showq")
        if syslog_name != self.name:
            log.warning("Postfix instance %s logs as %r: name it %r so that its queue and log series agree",
                        self.name, syslog_name, syslog_name)
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
