"""Comparative experiments: models (arms) compared side by side on the same prompts.

An experiment is defined once and stored as a JSON event on the experiments topic
(``Settings.experiments_topic``), keyed by its id; the topic is compacted, so the latest event per
id is the definition. Judgments join an experiment by carrying its id (``experiment_id`` on
feedback events); ``prefpair report`` then compares its arms head to head.

An *arm* names the model a candidate came from, as the report labels models: ``model_name`` or
``model_name:model_version``. An arm given as a bare model name matches every version of it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Self

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefpair.errors import first_problem
from prefpair.schemas.exceptions import ValidationError
from prefpair.schemas.models import now_ms

ID_MAX = 256


class Experiment(BaseModel):
    """One comparative experiment's definition."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment_id: str = Field(min_length=1, max_length=ID_MAX)
    name: str = Field(min_length=1, max_length=ID_MAX)
    arms: tuple[str, ...] = Field(min_length=2, max_length=100, description="The models compared (at least two).")
    created_ms: int = Field(ge=0)
    description: str | None = Field(default=None, max_length=4096)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=100)

    @model_validator(mode="after")
    def _distinct_arms(self) -> Self:
        if any(not arm.strip() for arm in self.arms):
            raise ValueError("arms: an arm is empty")
        if len(set(self.arms)) != len(self.arms):
            raise ValueError("arms: an arm is named twice")
        return self

    @classmethod
    def parse(cls, data: Any) -> Experiment:
        """Validate ``data``; any failure is a ValidationError naming the field."""
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            field, reason = first_problem(exc, "experiment")
            if field == "experiment" and reason.startswith("Value error, arms:"):
                field, reason = "arms", reason.removeprefix("Value error, arms: ")
            raise ValidationError(field, reason) from None

    @classmethod
    def new(
        cls,
        name: str,
        arms: Iterable[str],
        *,
        experiment_id: str | None = None,
        description: str | None = None,
        metadata: Mapping[str, str] | None = None,
        created_ms: int | None = None,
    ) -> Experiment:
        """A new definition (a fresh id unless one is given; created now unless told)."""
        return cls.parse(
            {
                "experiment_id": experiment_id or uuid.uuid4().hex,
                "name": name,
                "arms": tuple(arms),
                "created_ms": now_ms() if created_ms is None else created_ms,
                "description": description,
                "metadata": dict(metadata or {}),
            }
        )

    def to_bytes(self) -> bytes:
        """The event's value on the experiments topic."""
        return json.dumps(self.model_dump(mode="json"), separators=(",", ":"), sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, value: bytes) -> Experiment:
        try:
            data = json.loads(value)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValidationError("experiment", f"not JSON: {exc}") from None
        return cls.parse(data)

    def arm_of(self, model: str) -> str | None:
        """The arm a model label (``name`` or ``name:version``) belongs to, or None."""
        if model in self.arms:
            return model
        base = model.split(":", 1)[0]
        return base if base in self.arms else None


def latest_definitions(values: Iterable[bytes]) -> list[Experiment]:
    """The definitions of a topic's events in order (the last per id wins), oldest first;
    events that are not definitions are skipped."""
    found: dict[str, Experiment] = {}
    for value in values:
        try:
            experiment = Experiment.from_bytes(value)
        except ValidationError:
            continue
        found[experiment.experiment_id] = experiment
    return sorted(found.values(), key=lambda e: (e.created_ms, e.experiment_id))
