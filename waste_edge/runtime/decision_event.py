"""A decision change as one typed event, and the small interface of everything that acts on it.

A loop (`serve`'s camera threads, `camera`) makes one `DecisionEvent` when a camera's decided label
changes and hands the same object to every decision sink: MQTT, Server-Sent Events, `--on-decision`
commands, webhooks. Each transport renders it with `doc()` into the one wire schema,
`waste-edge.decision/1`, so a consumer reads the same keys whichever way the decision reached it:

  seq            the sender's message counter (a gap is a lost message; each transport numbers its own)
  ts             when the message was made (Unix seconds, 3 decimals)
  schema         "waste-edge.decision/1"
  camera         camera id (cam0, or the NAME of --device NAME=SRC)
  label          class name (e.g. "B") or "uncertain"
  display_name   the class's display name (e.g. "biodegradable") or "uncertain"
  confidence     smoothed probability of the leading class (also when uncertain), 0..1
  probabilities  the model's probabilities of the frame that changed the decision, per class
  previous       the label before this change (null for a camera's first decision)
  frame          the source's frame number
  model          sha256 of the model that decided

Stdlib only: `runtime` must stay importable on a bare Raspberry Pi install.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Protocol

DECISION_SCHEMA = "waste-edge.decision/1"
# The keys of a rendered decision message, in order (the MQTT test and the webhook test hold them to this).
DECISION_KEYS = ("seq", "ts", "schema", "camera", "label", "display_name", "confidence", "probabilities", "previous", "frame", "model")


@dataclass(frozen=True)
class DecisionEvent:
    camera: str
    label: str
    display_name: str
    confidence: float
    probabilities: Mapping[str, float]
    previous: str | None
    frame: int
    model: str  # sha256 of the model
    ts: float  # when the decision changed (time.time())

    def __post_init__(self) -> None:  # frozen all the way down: one event object is shared by every sink
        object.__setattr__(self, "probabilities", MappingProxyType(dict(self.probabilities)))

    def fields(self) -> dict[str, Any]:
        """The message without `seq` and `ts` (for a transport that numbers and stamps its own messages)."""
        return {
            "schema": DECISION_SCHEMA, "camera": self.camera, "label": self.label, "display_name": self.display_name,
            "confidence": self.confidence, "probabilities": dict(self.probabilities), "previous": self.previous,
            "frame": self.frame, "model": self.model,
        }

    def doc(self, seq: int, ts: float | None = None) -> dict[str, Any]:
        """The whole `waste-edge.decision/1` message; `ts` defaults to now (when the message is made)."""
        return {"seq": seq, "ts": round(time.time() if ts is None else ts, 3), **self.fields()}


class DecisionSink(Protocol):
    """What acts on decision changes. `on_decision` runs on the camera's thread and must return at once
    (queue, never wait on a network or a child process); `status` returns a frozen snapshot; `close`
    delivers what is queued within `timeout` seconds and counts what it could not."""

    def on_decision(self, event: DecisionEvent) -> None: ...

    def status(self) -> Any: ...

    def close(self, timeout: float) -> None: ...
