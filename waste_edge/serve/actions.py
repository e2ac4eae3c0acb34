"""What the service does with a decision change besides MQTT and SSE: `--on-decision` commands and `--webhook` POSTs.

`ActionOptions` is the "acting on decisions" group in one frozen object (`resolve_actions` makes it from the
command line's `HookOptions` and `WebhookOptions`, checking each); `DecisionActions` builds the senders from it
and is itself a decision sink (`runtime.decision_event.DecisionSink`): every camera's frame loop hands it its
decision changes (`runtime.sinks.Decisions`), the service reads one snapshot of it for status and metrics,
and closes it once at exit, after the cameras stopped and before MQTT says "offline". Home Assistant
discovery is not a decision sink (it only describes topics MQTT already carries): see `ha_discovery.py`.
"""

from __future__ import annotations

import argparse
import logging
import threading
from dataclasses import MISSING, dataclass
from pathlib import Path

from waste_edge._options import float_in, int_in, option
from waste_edge._outputs import input_path
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.decision_event import DecisionEvent, DecisionSink
from waste_edge.runtime.hooks import DecisionHook, HookOptions
from waste_edge.serve.snapshots import ActionsStatus
from waste_edge.serve.webhooks import SECRET_ENV, WebhookSecret, WebhookSender, check_webhook_url, load_secret

log = logging.getLogger(__name__)

ACTIONS_HELP = ("On every change of a camera's decided label (B, N, uncertain): run a command, POST webhooks, and\n"
                "describe the MQTT topics to Home Assistant. From background threads: the frame loop never waits;\n"
                "what could not be done is counted in /api/v1/status and /metrics. See README, 'Acting on decisions'.")


@dataclass(frozen=True)
class WebhookOptions:
    """--webhook and --mqtt-discovery as the command line gives them (`resolve_actions` checks them)."""

    urls: list[str] = option(MISSING, "--webhook", default_factory=list, action="append", metavar="URL",
                             help="POST the decision JSON (the MQTT decision schema) to URL; repeat for several; 2xx = delivered, "
                                  "retried with back-off, queued up to --webhook-queue")
    secret_file: Path | None = option(None, "--webhook-secret-file", type=input_path, metavar="FILE",
                                      help="sign webhook bodies with the secret in FILE (header X-Waste-Edge-Signature: t=TS,v1=HMAC-SHA256 hex); "
                                           f"or set {SECRET_ENV}. Never on the command line")
    secret_on_command_line: str | None = option(None, "--webhook-secret", help=argparse.SUPPRESS)  # refused with a pointer
    queue: int = option(1000, "--webhook-queue", type=int_in(1, 1_000_000), metavar="N",
                        help="messages kept per URL while it is down; the oldest beyond are dropped and counted (default: %(default)s)")
    timeout: float = option(5.0, "--webhook-timeout", type=float_in(0.0, 300.0, open_lo=True), metavar="S",
                            help="seconds to wait for a webhook's answer before retrying (default: %(default)s)")
    mqtt_discovery: str | None = option(None, "--mqtt-discovery", nargs="?", const="homeassistant", metavar="PREFIX",
                                        help="publish Home Assistant MQTT discovery configs (retained) under PREFIX (default: homeassistant): one "
                                             "device, per camera decision, confidence, last-hour counts and frames/s; needs --mqtt")


@dataclass(frozen=True)
class ActionOptions:
    on_decision: tuple[str, ...] = ()  # argv of --on-decision (runtime.hooks.parse_command); empty: none
    on_decision_timeout: float = 10.0
    webhooks: tuple[str, ...] = ()  # --webhook URLs
    webhook_secret: WebhookSecret | None = None
    webhook_queue: int = 1000
    webhook_timeout: float = 5.0
    webhook_attempts: int = 10
    mqtt_discovery: str | None = None  # HA discovery prefix; None: off
    flush_s: float = 5.0  # at exit: time to finish running commands and deliver queued webhooks


def resolve_actions(hook: HookOptions, web: WebhookOptions, *, mqtt: str | None, mqtt_summary_s: float) -> "ActionOptions":
    """The "acting on decisions" group as `ActionOptions`; a one-line error for a bad command, URL or secret."""
    from waste_edge.serve.ha_discovery import NEEDS_MQTT, check_discovery_prefix

    if web.secret_on_command_line is not None:
        raise WasteEdgeError(f"--webhook-secret: a secret on the command line is visible to every user (ps, shell history); "
                             f"put it in a file for --webhook-secret-file (chmod 600) or in {SECRET_ENV}")
    if web.secret_file is not None and not web.urls:
        raise WasteEdgeError("--webhook-secret-file without --webhook: there is nothing to sign")
    if web.mqtt_discovery is not None and not mqtt:
        raise WasteEdgeError(NEEDS_MQTT)
    if web.mqtt_discovery is not None and mqtt_summary_s == 0:
        log.warning("--mqtt-summary 0: Home Assistant's last-hour counts and frames/s will update only at exit")
    return ActionOptions(
        on_decision=hook.argv(), on_decision_timeout=hook.timeout, webhooks=tuple(check_webhook_url(u) for u in web.urls),
        webhook_secret=load_secret(web.secret_file) if web.urls else None, webhook_queue=web.queue, webhook_timeout=web.timeout,
        mqtt_discovery=check_discovery_prefix(web.mqtt_discovery) if web.mqtt_discovery is not None else None,
    )


class DecisionActions:
    def __init__(self, options: ActionOptions) -> None:
        self.options = options
        self.hook = DecisionHook(list(options.on_decision), timeout=options.on_decision_timeout) if options.on_decision else None
        self.webhooks = [WebhookSender(url, secret=options.webhook_secret, queue_size=options.webhook_queue,
                                       timeout=options.webhook_timeout, attempts=options.webhook_attempts) for url in options.webhooks]
        self.sinks: list[DecisionSink] = [*([self.hook] if self.hook else []), *self.webhooks]

    def on_decision(self, event: DecisionEvent) -> None:
        for sink in self.sinks:
            sink.on_decision(event)

    def status(self) -> ActionsStatus:
        return ActionsStatus(self.hook.status() if self.hook else None, tuple(w.status() for w in self.webhooks))

    def close(self, timeout: float | None = None) -> None:
        """Close every sink at once (a down webhook must not eat the time of a running command), within `timeout`."""
        t = self.options.flush_s if timeout is None else timeout
        threads = [threading.Thread(target=s.close, args=(t,), name="waste-edge close action", daemon=True) for s in self.sinks]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
