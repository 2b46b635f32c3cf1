"""Builds the collectors a configuration asks for and runs them with the HTTP server."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Sequence

from collectors.base import BaseCollector
from collectors.classify import Classifier
from collectors.delivery_accounting import DeadLetter
from collectors.postfix_queue import PostfixInstance, PostfixQueueCollector, postconf_value
from exporter.config import Config, PostfixInstanceConfig
from exporter.http import AgentHTTP, Request, Response
from exporter.registry import build_registry
from exporter.scheduler import Scheduler
from exporter.web_config import load_web_config

log = logging.getLogger("mtaq.agent")


def resolve_instance(conf: PostfixInstanceConfig) -> PostfixInstance:
    """Fill in the showq socket path from the instance's ``queue_directory`` when not given."""
    showq = conf.showq_path
    if showq is None:
        try:
            queue_directory = postconf_value("queue_directory", conf.config_dir)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("postconf failed for instance %s (%s); assuming /var/spool/postfix", conf.name, exc)
            queue_directory = "/var/spool/postfix"
        showq = os.path.join(queue_directory, "public", "showq")
    return PostfixInstance(conf.name, showq, conf.config_dir, conf.postqueue)


def postfix_present() -> bool:
    """Whether a local Postfix looks installed (for ``postfix.enabled: null``)."""
    return shutil.which("postconf") is not None or os.path.exists("/var/spool/postfix/public/showq")


def build_collectors(config: Config, classifier: Classifier) -> list[BaseCollector]:
    """The collectors ``config`` enables, not yet started."""
    collectors: list[BaseCollector] = []
    enabled = config.postfix.enabled
    if enabled is None:
        enabled = postfix_present()
    if enabled:
        collectors.append(PostfixQueueCollector(
            [resolve_instance(i) for i in config.postfix.instances], classifier,
            interval=config.postfix.queue_scan_interval))
    if config.log.paths:
        from collectors.postfix_log import PostfixLogCollector
        collectors.append(PostfixLogCollector(
            config.log.paths, classifier, checkpoint_path=config.log.checkpoint_file,
            start_at=config.log.start_from, max_tracked_messages=config.log.max_tracked_messages,
            poll_interval=config.log.poll_interval))
    if config.dnsbl.enabled:
        from collectors.dnsbl import DnsblCollector
        collectors.append(DnsblCollector(config.dnsbl))
    return collectors


def dead_letters_payload(dead_letters: Iterable[DeadLetter]) -> dict[str, object]:
    """The dead-letter API document: newest first, with the failure context of each."""
    return {"dead_letters": [dataclasses.asdict(d) for d in sorted(dead_letters, key=lambda d: -d.expired_at)]}


def split_listen_address(address: str) -> tuple[str, int]:
    """``host:port`` (host may be empty or a bracketed IPv6 address) into its parts."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class Agent:
    """Collectors + scheduler + HTTP server; ``start()``, then ``stop()`` on shutdown."""

    def __init__(self, config: Config, collectors: Sequence[BaseCollector] | None = None) -> None:
        self.config = config
        self.classifier = Classifier(config)
        self.collectors = list(collectors) if collectors is not None else build_collectors(config, self.classifier)
        self.registry = build_registry(self.collectors)
        self.tls, auth = load_web_config(config.web.config_file) if config.web.config_file else (None, None)
        self.http = AgentHTTP(self.registry, self.collectors, telemetry_path=config.web.telemetry_path, auth=auth)
        self.scheduler = Scheduler(self.collectors)
        self._install_routes()
        self.stopped = threading.Event()
        self.port = 0

    def _install_routes(self) -> None:
        log = next((c for c in self.collectors if c.id == "postfix_log"), None)
        if log is not None:
            self.http.add_route("GET", "/api/v1/dead-letters",
                                lambda _r: Response.json(dead_letters_payload(log.snapshot().dead_letter_log)),
                                "Dead letters (JSON)")
        dnsbl = next((c for c in self.collectors if c.id == "dnsbl"), None)
        if dnsbl is not None:
            self.http.add_route("GET", "/api/v1/blocklists",
                                lambda _r: Response.json(dnsbl.last_results()), "Blocklist results (JSON)")
            self.http.add_route("POST", "/api/v1/blocklists/check", self._recheck_blocklists)

    def _recheck_blocklists(self, _request: Request) -> Response:
        self.scheduler.run_now("dnsbl")
        return Response.json({"scheduled": True}, 202)

    def start(self) -> None:
        """Start collectors, scheduled refreshes and the HTTP server."""
        if not self.collectors:
            log.warning("no collector is enabled: serving only the agent's own metrics")
        for collector in self.collectors:
            collector.start()
        self.scheduler.start()
        host, port = split_listen_address(self.config.web.listen_address)
        server = self.http.serve(host, port, self.tls)
        self.port = server.server_address[1]
        log.info("listening on %s:%d, collectors: %s", host or "*", self.port,
                 ", ".join(c.id for c in self.collectors) or "none")

    def stop(self) -> None:
        """Stop serving and let collectors write their checkpoints."""
        self.http.shutdown()
        self.scheduler.stop()
        for collector in self.collectors:
            collector.stop()
        self.stopped.set()
