"""What traffic to simulate: :class:`TrafficSpec`, every knob of the one traffic model in one place.

The defaults describe a small chat product with A/B candidates: several model versions with
planted strengths, end users picking between the first two answers shown (or giving a thumbs up
or down, sometimes with a correction), a model judge, annotators ranking every answer and a reward
model scoring each, some of it updated or deleted later, a little feedback that arrives before its
inference, a few requests whose inference is never logged, and a few malformed messages. Biases
are off unless planted, so analytics over the result find the planted truth and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefpair.errors import first_problem
from prefpair.simulate.exceptions import TrafficSpecError

START_MS = 1_793_491_200_000
"""2026-11-01T00:00:00Z: the default first event time, fixed so that a seed always gives the same events."""

APP_USER, MODEL_JUDGE, HUMAN_ANNOTATOR, REWARD_MODEL = "APP_USER", "MODEL_JUDGE", "HUMAN_ANNOTATOR", "REWARD_MODEL"
SOURCE_TYPES = (APP_USER, MODEL_JUDGE, HUMAN_ANNOTATOR, REWARD_MODEL)
SEES_ORDER = frozenset({APP_USER, MODEL_JUDGE, HUMAN_ANNOTATOR})
"""Source types shown the candidates in their presentation order (the reward model scores each alone)."""

DEFAULT_MODELS: Mapping[str, float] = {
    "chat-small:2026-09": -0.6,
    "chat-small:2026-11": 0.0,
    "chat-large:2026-10": 0.5,
    "chat-large:2026-11-rc": 0.9,
}
"""``"name:version"`` -> planted strength on the Bradley-Terry logit scale."""

DEFAULT_SOURCE_SHARES: Mapping[str, float] = {APP_USER: 0.6, MODEL_JUDGE: 0.3, HUMAN_ANNOTATOR: 0.3, REWARD_MODEL: 0.15}
"""Share of requests each source type judges."""

DEFAULT_SYSTEM_PROMPTS: tuple[str | None, ...] = (
    None,
    "You are a helpful assistant.",
    "You are a helpful assistant. Answer briefly and name your sources.",
)

class TrafficSpec(BaseModel):
    """How much traffic, and which truth to plant in it. Frozen; bad values raise :class:`TrafficSpecError`.

    Judgments follow Bradley-Terry (pairwise) and Plackett-Luce (rankings) on each candidate's
    *utility* for a source type: ``strength + length_bias * log(len / candidate_chars) -
    position_bias * place`` (place 0 is shown first). The reward model sees strength and length,
    never the place. ``*_by_source`` replace the bias for the source types they name.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests: int = Field(default=3000, ge=1, description="requests served (each logs one inference, unless lost)")
    seed: int = Field(default=7, description="the same seed gives the same events")
    models: Mapping[str, float] = Field(default=DEFAULT_MODELS, description='"name:version" -> planted strength')
    min_candidates: int = Field(default=2, ge=2, description="candidates per request, at least")
    max_candidates: int = Field(default=4, ge=2, le=26, description="candidates per request, at most")
    prompt_chars: int = Field(default=400, ge=40, le=100_000, description="characters of a prompt")
    candidate_chars: int = Field(
        default=600, ge=40, le=100_000, description="median characters of a candidate (lengths are log-normal)"
    )
    length_spread: float = Field(default=0.45, ge=0.0, le=2.0, description="sigma of the log of candidate lengths")
    chat_share: float = Field(default=0.1, ge=0.0, le=1.0, description="requests logged as chat messages, not a prompt")
    system_prompts: tuple[str | None, ...] = Field(
        default=DEFAULT_SYSTEM_PROMPTS, min_length=1, description="system prompts to draw from (None: no system prompt)"
    )
    users: int = Field(default=400, ge=1, description="distinct end users")
    start_ms: int = Field(default=START_MS, ge=0, description="event time of the first request")
    days: float = Field(default=14.0, gt=0.0, description="inference event times spread over this many days")

    source_shares: Mapping[str, float] = Field(
        default=DEFAULT_SOURCE_SHARES, description="share of requests each source type judges"
    )
    disjoint_sources: bool = Field(
        default=False, description="each request is judged by one source type at most (shares must add up to <= 1)"
    )
    position_bias: float = Field(default=0.0, description="logits the candidate shown one place earlier gains")
    position_bias_by_source: Mapping[str, float] = Field(default_factory=dict)
    length_bias: float = Field(default=0.0, description="logits per unit of log length ratio")
    length_bias_by_source: Mapping[str, float] = Field(default_factory=dict)

    user_thumbs_share: float = Field(
        default=0.25, ge=0.0, le=1.0, description="end-user judgments that are a thumbs up/down on one candidate"
    )
    correction_share: float = Field(default=0.3, ge=0.0, le=1.0, description="thumbs-down that bring a correction")
    tie_share: float = Field(default=0.03, ge=0.0, le=1.0, description="end-user picks that are a TIE")
    both_bad_share: float = Field(default=0.02, ge=0.0, le=1.0, description="end-user picks that are BOTH_BAD")
    annotators: int = Field(default=6, ge=1, le=1000, description="annotators in the pool")
    second_annotator_share: float = Field(
        default=0.3, ge=0.0, le=1.0, description="annotated requests ranked by annotators_per_item annotators"
    )
    annotators_per_item: int = Field(default=2, ge=1, description="annotators on a request that gets more than one")
    annotator_copy_share: float = Field(
        default=0.0, ge=0.0, le=1.0, description="an annotator after the first copies the first one's ranking"
    )
    update_share: float = Field(
        default=0.05, ge=0.0, le=1.0, description="judgments updated a minute later (a second look: drawn again)"
    )
    delete_share: float = Field(default=0.03, ge=0.0, le=1.0, description="judgments deleted a minute later")
    early_feedback_share: float = Field(
        default=0.04, ge=0.0, le=1.0, description="judged requests whose inference is logged after its first feedback"
    )
    early_lag_ms: int = Field(
        default=5_000, ge=0, description="mean time from the first feedback to its late inference (exponential)"
    )
    orphans: int = Field(
        default=3, ge=0, description="requests whose inference is never logged; each has one end-user pick (an orphan)"
    )
    malformed: int = Field(default=6, ge=0, description="malformed messages a buggy producer sends at the end")

    @model_validator(mode="wrap")
    @classmethod
    def _named_errors(cls, data: Any, handler: pydantic.ValidatorFunctionWrapHandler) -> Self:
        try:
            spec: Self = handler(data)
        except pydantic.ValidationError as exc:
            raise TrafficSpecError(*first_problem(exc, cls.__name__)) from None
        spec._check()
        return spec

    def _check(self) -> None:
        if not self.models:
            raise TrafficSpecError("models", "give at least one model")
        for key in self.models:
            if not key.partition(":")[0]:
                raise TrafficSpecError("models", f'{key!r}: expected "name" or "name:version"')
        if self.max_candidates < self.min_candidates:
            raise TrafficSpecError(
                "max_candidates", f"{self.max_candidates} is below min_candidates {self.min_candidates}"
            )
        for field in ("source_shares", "position_bias_by_source", "length_bias_by_source"):
            unknown = set(getattr(self, field)) - set(SOURCE_TYPES)
            if unknown:
                raise TrafficSpecError(field, f"unknown source types {sorted(unknown)}; known: {list(SOURCE_TYPES)}")
        if REWARD_MODEL in self.position_bias_by_source:
            raise TrafficSpecError(
                "position_bias_by_source", "REWARD_MODEL scores each candidate alone: it never sees the order"
            )
        for source, share in self.source_shares.items():
            if not 0.0 <= share <= 1.0:
                raise TrafficSpecError(f"source_shares.{source}", f"a share is between 0 and 1, got {share}")
        if self.disjoint_sources and sum(self.source_shares.values()) > 1 + 1e-9:
            shares = dict(self.source_shares)
            raise TrafficSpecError("source_shares", f"disjoint sources need shares summing to 1 or less, got {shares}")
        if self.annotators_per_item > self.annotators:
            raise TrafficSpecError(
                "annotators_per_item", f"{self.annotators_per_item} is more than the {self.annotators} annotators"
            )
        if self.tie_share + self.both_bad_share > 1:
            raise TrafficSpecError("both_bad_share", "tie_share + both_bad_share is more than 1")
        if self.update_share + self.delete_share > 1:
            raise TrafficSpecError("delete_share", "update_share + delete_share is more than 1")
        if self.orphans > self.requests:
            raise TrafficSpecError("orphans", f"{self.orphans} lost inferences out of {self.requests} requests")

    def position_bias_of(self, source: str) -> float:
        """Logits per place for ``source`` (0 for the reward model, which never sees the order)."""
        if source not in SEES_ORDER:
            return 0.0
        return self.position_bias_by_source.get(source, self.position_bias)

    def length_bias_of(self, source: str) -> float:
        return self.length_bias_by_source.get(source, self.length_bias)
