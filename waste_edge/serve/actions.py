"""What the service does with a decision change besides MQTT and SSE: `--on-decision` commands and `--webhook` POSTs.

`ActionOptions` is the CLI's "acting on decisions" group in one frozen object; `DecisionActions` builds the
sinks from it and is itself a decision sink (`runtime.decision_event.DecisionSink`): the service hands
every decision change to it at one place (`Service._on_decision`), reads one snapshot for status and
metrics, and closes it at exit, after the cameras stopped and before MQTT says "offline". Home Assistant
discovery is not a decision sink (it only describes topics MQTT already carries): see `ha_discovery.py`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from waste_edge.runtime.decision_event import DecisionEvent, DecisionSink
from waste_edge.runtime.hooks import DecisionHook, HookStatus
from waste_edge.serve.webhooks import WebhookSecret, WebhookSender, WebhookStatus


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


@dataclass(frozen=True)
class ActionsStatus:
    on_decision: HookStatus | None
    webhooks: tuple[WebhookStatus, ...]


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
