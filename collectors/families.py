"""The metric catalogue: every family the agent can emit, with its type, labels and help text.

Collectors build their families from these entries (``QUEUE_MESSAGES.new()``) and declare in
``describe()`` which entries they emit, so that two sources of one family (Postfix and Exim
queues) share a single definition and the agent can refuse at start-up two collectors that
define one name differently. The dashboards' and rules' tests read the same catalogue.

Help texts describe the number, never the MTA it came from: ``mta`` and ``mta_instance`` say that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

Kind = Literal["gauge", "counter", "histogram"]
_CLASSES = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily, "histogram": HistogramMetricFamily}

MTA = ("mta", "mta_instance")


@dataclass(frozen=True)
class Family:
    """One metric family: ``name`` as exposed (counters end in ``_total``)."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()

    def new(self) -> Metric:
        """An empty prometheus_client family to add samples to."""
        return _CLASSES[self.kind](self.name, self.help, labels=list(self.labels))

    @property
    def family_name(self) -> str:
        """The family's name in prometheus_client and in the exposition's HELP/TYPE lines."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name

    def sample_names(self) -> tuple[str, ...]:
        """The names its samples carry (what PromQL selects)."""
        if self.kind == "histogram":
            return tuple(f"{self.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        return (self.name,)


def _g(name: str, help: str, *labels: str) -> Family:
    return Family(name, "gauge", help, labels)


def _c(name: str, help: str, *labels: str) -> Family:
    return Family(name, "counter", help, labels)


# -- the agent itself ------------------------------------------------------------------------
BUILD_INFO = _g("mtaq_build_info", "mtaq-exporter build information.", "version")
COLLECTOR_SUCCESS = _g("mtaq_collector_success", "1 if the collector's last run succeeded.", "collector")
COLLECTOR_DURATION = _g("mtaq_collector_duration_seconds",
                        "Duration of the collector's last run (a scan, a check, a batch of log lines) in seconds.",
                        "collector")
AGENT = (BUILD_INFO, COLLECTOR_SUCCESS, COLLECTOR_DURATION)

# -- lane objectives (configuration, for the alert rules to compare with) ----------------------
LANE_OBJECTIVE_MESSAGES = _g("mtaq_lane_objective_messages",
                             "Configured objective of a lane in messages (max_messages: queued messages, hold "
                             "excluded, above which the backlog alert fires).", "lane", "objective")
LANE_OBJECTIVE_SECONDS = _g("mtaq_lane_objective_seconds",
                            "Configured objective of a lane in seconds (max_oldest_age: warning, critical_oldest_age: "
                            "critical limit of the age of its oldest queued message, hold excluded; "
                            "max_first_attempt_wait: longest wait for a first delivery attempt while less urgent "
                            "lanes deliver).",
                            "lane", "objective")
OBJECTIVES = (LANE_OBJECTIVE_MESSAGES, LANE_OBJECTIVE_SECONDS)

# -- queues --------------------------------------------------------------------------------
_QUEUE = ", from the MTA's queue listing."
_LOG = ", from the mail log."
UP = _g("mtaq_up", "1 if the last read of the MTA instance's queue succeeded.", *MTA)
QUEUE_MESSAGES = _g("mtaq_queue_messages", "Messages in the queue" + _QUEUE, *MTA, "queue", "lane")
QUEUE_RECIPIENTS = _g("mtaq_queue_recipients", "Recipients of queued messages still to be delivered" + _QUEUE,
                      *MTA, "queue", "lane")
QUEUE_SIZE = _g("mtaq_queue_size_bytes", "Total size of queued messages in bytes" + _QUEUE, *MTA, "queue", "lane")
QUEUE_OLDEST = _g("mtaq_queue_oldest_message_timestamp_seconds",
                  "Arrival time of the oldest message in the queue (absent when empty)" + _QUEUE, *MTA, "queue", "lane")
QUEUE_DEFERRED = _g("mtaq_queue_deferred_recipients",
                    "Recipients of the deferred queue, by provider and the class of their defer reason" + _QUEUE,
                    *MTA, "provider", "reason")
QUEUE_FORCED_EXPIRE = _g("mtaq_queue_forced_expire_messages",
                         "Queued messages marked to expire at their next delivery attempt" + _QUEUE, *MTA)
QUEUE_SCAN_DURATION = _g("mtaq_queue_scan_duration_seconds", "Duration of the last complete queue scan in seconds.",
                         *MTA)
QUEUE_LAST_SCAN = _g("mtaq_queue_last_scan_timestamp_seconds", "Time the last complete queue scan finished.", *MTA)
QUEUE_SOURCE = _g("mtaq_queue_source_info",
                  "Where the instance's queue was last read from (source: showq, postqueue, spool or exim_bp). "
                  "Always 1.",
                  *MTA, "source", "path")
QUEUE_SKIPPED = _g("mtaq_queue_skipped_messages",
                   "Messages of the last complete scan left out of the totals: an unknown queue name, a "
                   "non-finite number or an undecodable queue file" + _QUEUE, *MTA, "reason")
QUEUE = (UP, QUEUE_MESSAGES, QUEUE_RECIPIENTS, QUEUE_SIZE, QUEUE_OLDEST, QUEUE_DEFERRED, QUEUE_FORCED_EXPIRE,
         QUEUE_SCAN_DURATION, QUEUE_LAST_SCAN, QUEUE_SOURCE, QUEUE_SKIPPED)

# -- delivery log ----------------------------------------------------------------------------
RECEIVED = _c("mtaq_messages_received_total",
              "Messages queued by the MTA, counted once per queue id (its own notifications excluded)" + _LOG,
              *MTA, "lane")
ATTEMPTS = _c("mtaq_delivery_attempts_total",
              "Delivery attempts per recipient by outcome (the MTA's own deferrals and verify probes excluded)"
              + _LOG, *MTA, "lane", "provider", "status")
MESSAGES_DEFERRED = _c("mtaq_messages_deferred_total",
                       "Messages deferred at least once, counted on their first deferral" + _LOG,
                       *MTA, "lane", "provider")
DEFERRALS = _c("mtaq_deferrals_total", "Deferred delivery attempts by provider and reason" + _LOG,
               *MTA, "provider", "reason")
BOUNCES = _c("mtaq_bounces_total",
             "Recipients that finally failed: hard (5.x.x except 5.2.x) or soft (4.x.x, 5.2.x, still pending "
             "at expiry)" + _LOG, *MTA, "lane", "provider", "type", "reason")
DEAD_LETTERS = _c("mtaq_dead_letters_total",
                  "Messages that expired undelivered and went back to the sender, by their last deferral" + _LOG,
                  *MTA, "lane", "provider", "reason")
DELIVERY_DELAY = Family("mtaq_delivery_delay_seconds", "histogram",
                        "Seconds from arrival to a recipient's final outcome (sent, bounced, expired), observed once "
                        "per recipient; hops that stay on the host are not final" + _LOG, (*MTA, "lane", "status"))
SELF_DEFERRALS = _c("mtaq_self_deferrals_total",
                    "Deferrals the MTA inflicted on itself (destination suspended, deferred transport), by underlying "
                    "cause" + _LOG, *MTA, "reason")
VERIFY_PROBES = _c("mtaq_verify_probes_total", "Address-verification probe results (not deliveries)" + _LOG,
                   *MTA, "status")
SOFT_BOUNCE_DEFERRALS = _c("mtaq_soft_bounce_deferrals_total",
                           "Deliveries deferred instead of bounced because the MTA's soft-bounce mode is on (each also "
                           "counts as a deferral), by reason" + _LOG, *MTA, "reason")
NOTIFICATIONS = _c("mtaq_notifications_total",
                   "Notification messages the MTA created itself (non_delivery, delay, delivery_status), not counted "
                   "as received mail" + _LOG, *MTA, "type")
TRACKED = _g("mtaq_log_tracked_messages", "Messages whose delivery state is kept in memory" + _LOG, *MTA)
EVICTED = _c("mtaq_log_evicted_messages_total",
             "Message states dropped by the size or age cap before the MTA removed them" + _LOG, *MTA)
NEGATIVE_DELAYS = _c("mtaq_delivery_negative_delays_total",
                     "Final outcomes whose delay came out negative (out-of-order timestamps, a negative delay=), "
                     "observed as 0" + _LOG, *MTA)
LOG_LINES = _c("mtaq_log_lines_total", "Mail log lines read, by parse result.", "mta", "source", "result")
LOG_REOPENS = _c("mtaq_log_reopens_total", "Times the mail log was reopened (rotation, truncation, recovery).",
                 "mta", "source")
LOG_LAST_LINE = _g("mtaq_log_last_line_timestamp_seconds", "Unix time at which a line was last read from the mail log.",
                   "mta", "source")
CHECKPOINT_ERRORS = _c("mtaq_log_checkpoint_errors_total",
                       "Failed writes of the mail log checkpoint (the previous one stays; a restart re-reads more).",
                       "mta")
DELIVERY_LOG = (RECEIVED, ATTEMPTS, MESSAGES_DEFERRED, DEFERRALS, BOUNCES, DEAD_LETTERS, DELIVERY_DELAY,
                SELF_DEFERRALS, VERIFY_PROBES, SOFT_BOUNCE_DEFERRALS, NOTIFICATIONS, LOG_LINES, LOG_REOPENS,
                LOG_LAST_LINE, CHECKPOINT_ERRORS, TRACKED, EVICTED, NEGATIVE_DELAYS)

# -- DNS blocklists --------------------------------------------------------------------------
DNSBL_LISTED = _g("mtaq_dnsbl_listed",
                  "Last definitive blocklist answer: 1 = A record with a listing code, 0 = NXDOMAIN or NODATA. "
                  "Unknown answers keep the previous value; absent until a definitive answer.", "target", "list")
DNSBL_CHECK_SUCCESS = _g("mtaq_dnsbl_check_success",
                         "1 if the last run got a definitive answer for the target on the list; 0 if unknown "
                         "(timeout, SERVFAIL, REFUSED, refusal code, list failed its test points, run deadline).",
                         "target", "list")
DNSBL_LISTING_INFO = _g("mtaq_dnsbl_listing_info",
                        "Current listings (last definitive answer), one series per returned A record; meaning and "
                        "delist_url from the list catalogue. Always 1.", "target", "list", "code", "meaning",
                        "delist_url")
DNSBL_IMPACT = _g("mtaq_dnsbl_impact_score",
                  "0-100 from the catalogue weights of the lists the target is currently listed on: "
                  "100*(1-prod(1-w/100)), w = the heaviest returned code's weight per list.", "target")
DNSBL_LIST_HEALTHY = _g("mtaq_dnsbl_list_healthy",
                        "1 if the list's RFC 5782 test points answered correctly in the last run (listed canary "
                        "listed, not-listed canary NXDOMAIN); 0 makes its results unknown for the run.", "list")
DNSBL_LAST_RUN = _g("mtaq_dnsbl_last_run_timestamp_seconds", "Unix time the last blocklist run finished.")
DNSBL_RUN_DURATION = _g("mtaq_dnsbl_run_duration_seconds",
                        "Wall time of the last blocklist run over all targets and lists (bounded by the deadline).")
DNSBL = (DNSBL_LISTED, DNSBL_CHECK_SUCCESS, DNSBL_LISTING_INFO, DNSBL_IMPACT, DNSBL_LIST_HEALTHY, DNSBL_LAST_RUN,
         DNSBL_RUN_DURATION)

# -- alert-driven actions ----------------------------------------------------------------------
ACTIONS_TOTAL = _c("mtaq_actions_total",
                   "Decisions and outcomes of alert-driven actions: applied, extended, restored, ignored, failed, "
                   "dry_run.", "action", "provider", "result")
ACTION_ACTIVE = _g("mtaq_action_active", "1 while the action is in force for the provider.", "action", "provider")
ACTION_EXPIRY = _g("mtaq_action_expiry_timestamp_seconds",
                   "When the action in force ends unless its alert fires again (absent when none is in force).",
                   "action", "provider")
ACTIONS = (ACTIONS_TOTAL, ACTION_ACTIVE, ACTION_EXPIRY)

#: Every family, by exposed name.
CATALOGUE: dict[str, Family] = {f.name: f for f in (*AGENT, *OBJECTIVES, *QUEUE, *DELIVERY_LOG, *DNSBL, *ACTIONS)}
