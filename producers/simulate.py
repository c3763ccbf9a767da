"""Synthetic serving traffic: the events a chat product with A/B candidates would log.

Used by ``prefpair demo`` and the benchmarks. Deterministic for a seed. It goes through
:class:`~prefpair.producers.PreferenceLogger` like real serving code would, plus a few raw,
malformed messages that the consumer must route to the dead-letter topic. Model versions
have planted strengths (and end users a slight preference for what is shown first), so
analytics over the result have something true to find.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefpair.schemas.registry import FEEDBACK
from prefpair.schemas.wire import SINGLE_OBJECT_MAGIC, SingleObjectCodec

# (model name, version, planted strength on the Bradley-Terry logit scale)
DEFAULT_MODELS: tuple[tuple[str, str, float], ...] = (
    ("chat-small", "2026-09", -0.6),
    ("chat-small", "2026-11", 0.0),
    ("chat-large", "2026-10", 0.5),
    ("chat-large", "2026-11-rc", 0.9),
)

TOPICS = (
    "federated learning",
    "vector databases",
    "the French revolution",
    "sourdough baking",
    "Kafka consumer groups",
    "photosynthesis",
    "index funds",
    "the Rust borrow checker",
    "marathon training",
    "quantum error correction",
    "Byzantine art",
    "tax-loss harvesting",
)
ASKS = (
    "Summarize the key arguments for {t}.",
    "Explain {t} to a new colleague in three paragraphs.",
    "What are common misconceptions about {t}?",
    "Write a short FAQ about {t}.",
    "Compare two approaches to {t} and recommend one.",
)
FILLER = (
    "In practice the details matter more than the headline.",
    "A careful reader will notice the trade-offs involved.",
    "Evidence from several sources points the same way.",
    "This depends on the constraints of the team and the budget.",
    "The simplest version is usually the one that survives.",
    "Measure before optimising, and write down what you measured.",
)


@dataclass(frozen=True)
class TrafficSpec:
    """How much and what kind of traffic to simulate."""

    requests: int = 3000
    seed: int = 7
    min_candidates: int = 2
    max_candidates: int = 4
    prompt_bytes: int = 400
    candidate_bytes: int = 500
    models: tuple[tuple[str, str, float], ...] = DEFAULT_MODELS
    feedback_share: float = 0.85
    update_share: float = 0.05
    delete_share: float = 0.03
    early_feedback_share: float = 0.04
    lost_inference_share: float = 0.005  # serving crashed before logging: the feedback becomes an orphan
    malformed: int = 6


@dataclass
class SimulationStats:
    """What was sent, by kind."""

    inferences: int = 0
    feedback: int = 0
    updates: int = 0
    deletes: int = 0
    early_feedback: int = 0
    lost_inferences: int = 0
    malformed: int = 0
    by_source: dict[str, int] = field(default_factory=dict)

    @property
    def feedback_events(self) -> int:
        return self.feedback + self.updates + self.deletes


def _text(rng: random.Random, about: str, size: int) -> str:
    parts = [about]
    while sum(len(p) + 1 for p in parts) < size:
        parts.append(rng.choice(FILLER))
    return " ".join(parts)


def _beats(rng: random.Random, strength_a: float, strength_b: float, bias: float = 0.0) -> bool:
    return rng.random() < 1.0 / (1.0 + math.exp(strength_b - strength_a - bias))


class TrafficSimulator:
    """Logs ``spec.requests`` inferences and their feedback through a PreferenceLogger."""

    def __init__(self, spec: TrafficSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.stats = SimulationStats()

    def run(self, logger: Any, send_raw: Callable[[bytes, bytes], None] | None = None,
            progress: Callable[[int], None] | None = None) -> SimulationStats:
        """Send everything; ``send_raw(key, value)`` puts malformed bytes on the feedback topic."""
        for index in range(self.spec.requests):
            self._one_request(logger, index)
            if progress is not None:
                progress(1)
        if send_raw is not None:
            for key, value in self.malformed_messages():
                send_raw(key, value)
                self.stats.malformed += 1
        return self.stats

    # ------------------------------------------------------------------ one request
    def _one_request(self, logger: Any, index: int) -> None:
        rng, spec = self.rng, self.spec
        topic = rng.choice(TOPICS)
        prompt = _text(rng, rng.choice(ASKS).format(t=topic), spec.prompt_bytes)
        count = rng.randint(spec.min_candidates, spec.max_candidates)
        models = [rng.choice(spec.models) for _ in range(count)]
        candidates: list[dict[str, Any]] = []
        for position, (name, version, _strength) in enumerate(models):
            size = int(spec.candidate_bytes * rng.uniform(0.5, 1.5))
            candidates.append(
                {
                    "candidate_id": f"c{position}",
                    "text": _text(rng, f"[{name}] On {topic}:", size),
                    "model_name": name,
                    "model_version": version,
                    "temperature": round(rng.choice((0.2, 0.7, 1.0)), 2),
                    "top_p": 0.95,
                    "max_tokens": 512,
                    "seed": rng.randrange(1 << 31),
                    "finish_reason": "stop",
                    "completion_tokens": size // 4,
                    "latency_ms": round(rng.uniform(200, 2500), 1),
                }
            )
        order = [c["candidate_id"] for c in candidates]
        rng.shuffle(order)
        request_id = f"req-{spec.seed}-{index:07d}-{uuid.UUID(int=rng.getrandbits(128)).hex[:8]}"
        strengths = {c["candidate_id"]: m[2] for c, m in zip(candidates, models, strict=True)}
        inference = {
            "request_id": request_id,
            "prompt": prompt,
            "system_prompt": "You are a helpful assistant.",
            "candidates": candidates,
            "presentation_order": order,
            "user_id": f"user-{rng.randrange(400):04d}",
            "session_id": f"sess-{rng.randrange(2000):05d}",
            "environment": rng.choice(("production", "production", "staging")),
            "tags": [topic.split()[0].lower()],
            "metadata": {"app": "demo-chat", "region": rng.choice(("eu", "us"))},
        }
        early = rng.random() < spec.early_feedback_share
        with_feedback = rng.random() < spec.feedback_share
        lost = with_feedback and rng.random() < spec.lost_inference_share
        if not early and not lost:
            logger.log_inference(**inference)
        if with_feedback:
            self._feedback(logger, request_id, order, strengths, early)
        if early and not lost:
            logger.log_inference(**inference)
        if lost:
            self.stats.lost_inferences += 1
        else:
            self.stats.inferences += 1

    def _feedback(self, logger: Any, request_id: str, order: list[str], strengths: dict[str, float],
                  early: bool) -> None:
        rng, spec = self.rng, self.spec
        choice = rng.random()
        feedback_ids: list[str] = []
        a, b = order[0], order[1]
        if choice < 0.35:  # an end user picks one of the first two shown (slight first-position bias)
            winner, loser = (a, b) if _beats(rng, strengths[a], strengths[b], bias=0.3) else (b, a)
            outcome = "PREFERRED" if rng.random() > 0.05 else rng.choice(("TIE", "BOTH_BAD"))
            feedback_ids.append(logger.log_preference(
                request_id, chosen=winner, rejected=loser, outcome=outcome, source="app_user"))
            self._count("APP_USER")
        elif choice < 0.55:  # an end user gives a thumbs up or down, sometimes with a correction
            target = rng.choice(order)
            up = rng.random() < 1 / (1 + math.exp(-strengths[target]))
            correction = None
            if not up and rng.random() < 0.3:
                correction = f"A corrected answer for {request_id}: " + rng.choice(FILLER)
            feedback_ids.append(logger.log_feedback(
                request_id, key="user_rating", score=1.0 if up else 0.0, candidate=target,
                comment=None if up else "not quite", correction=correction,
                config={"type": "CONTINUOUS", "min": 0.0, "max": 1.0}, source="app_user"))
            self._count("APP_USER")
        elif choice < 0.7:  # an annotator ranks every candidate
            ranked = sorted(order, key=lambda c: strengths[c] + rng.gauss(0, 0.8), reverse=True)
            feedback_ids.append(logger.log_ranking(request_id, ranking=[[c] for c in ranked],
                                                   source={"type": "HUMAN_ANNOTATOR",
                                                           "source_id": f"annotator-{rng.randrange(6)}"}))
            self._count("HUMAN_ANNOTATOR")
        elif choice < 0.85:  # a model judge compares the first two
            winner, loser = (a, b) if _beats(rng, strengths[a], strengths[b]) else (b, a)
            feedback_ids.append(logger.log_preference(
                request_id, chosen=winner, rejected=loser, key="judge_preference",
                source={"type": "MODEL_JUDGE", "model": "judge-xl", "model_version": "3",
                        "run_id": f"judge-run-{rng.randrange(50)}"}))
            self._count("MODEL_JUDGE")
        else:  # a reward model scores every candidate
            for candidate in order:
                feedback_ids.append(logger.log_feedback(
                    request_id, key="reward", score=round(strengths[candidate] + rng.gauss(0, 0.7), 3),
                    candidate=candidate,
                    source={"type": "REWARD_MODEL", "model": "rm", "model_version": "v3"}))
                self._count("REWARD_MODEL")
        self.stats.feedback += len(feedback_ids)
        if early:
            self.stats.early_feedback += len(feedback_ids)
        for feedback_id in feedback_ids:
            roll = rng.random()
            if roll < spec.delete_share:
                logger.delete_feedback(feedback_id, request_id=request_id)
                self.stats.deletes += 1
            elif roll < spec.delete_share + spec.update_share:
                logger.update_feedback(feedback_id, request_id=request_id,
                                       comment="revised after a second look")
                self.stats.updates += 1

    def _count(self, source: str) -> None:
        self.stats.by_source[source] = self.stats.by_source.get(source, 0) + 1

    # ------------------------------------------------------------------ poison
    def malformed_messages(self) -> list[tuple[bytes, bytes]]:
        """Bytes a buggy or foreign producer might send: each must end up in the dead-letter topic."""
        codec = SingleObjectCodec()
        contract_violation = codec.encode(FEEDBACK, {
            "event_id": "bad-1", "feedback_id": "bad-1", "op": "CREATE", "request_id": "req-unknown",
            "timestamp_ms": 0, "key": None, "kind": None, "outcome": None, "chosen_id": None,
            "rejected_id": None, "ranking": None, "candidate_id": None, "score": None, "value": None,
            "comment": None, "correction": None, "config": None, "source": None, "metadata": {},
        })
        kinds = [
            b'{"request_id": "json-instead-of-avro"}',
            SINGLE_OBJECT_MAGIC + b"\x00" * 8 + b"\x02xx",  # unknown fingerprint
            contract_violation[:14],  # truncated body
            contract_violation,  # valid Avro, breaks the contract (no key, kind or source)
        ]
        return [(f"poison-{i}".encode(), kinds[i % len(kinds)]) for i in range(self.spec.malformed)]
