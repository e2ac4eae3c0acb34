"""The JSON bodies the API accepts, as pydantic models: wrong types, unknown or missing fields answer 422, never 500.

Each model forbids fields it does not know, so an old client sending `{"out": "/some/path"}` to adapt is told that
the service names its outputs itself instead of having the field silently ignored. Strings have length limits;
what they name is resolved by `names.py` / `catalogue.py`, never used as a path.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Name = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]
MAX_LABELS = 10_000  # labels per request (a page sends one; a script may send a folder's worth)


def describe_errors(errors: Sequence[Any]) -> str:
    """Validation errors (pydantic's or FastAPI's) as one line naming each field, without echoing the input
    (which may be a megabyte)."""
    parts = []
    for err in list(errors)[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "")) or "body"
        parts.append(f"{loc[:100]}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LabelsBody(_Strict):
    """POST /api/v1/review/labels: {"labels": {frame file: class name, display name, "skip", or null to clear}}."""

    labels: dict[Name, Optional[Label]] = Field(max_length=MAX_LABELS)


class AdaptBody(_Strict):
    """POST /api/v1/adapt: no fields (an empty body or {}); the service names the new model itself."""


class ModelChoice(_Strict):
    """POST /api/v1/model (JSON): exactly one of `name` (a file of GET /api/v1/models) or its `sha256`."""

    name: Optional[Name] = None
    sha256: Optional[Sha256] = None

    @model_validator(mode="after")
    def _one(self) -> "ModelChoice":
        if (self.name is None) == (self.sha256 is None):
            raise ValueError('give exactly one of "name" or "sha256" of a model listed by GET /api/v1/models')
        return self
