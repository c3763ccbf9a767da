"""The traffic model: requests, candidates, judgments and what goes wrong, as contract events.

:class:`Traffic` turns a :class:`~prefpair.simulate.spec.TrafficSpec` into
:class:`SimEvent` objects in *production order* (the order serving code would send them to
Kafka), deterministic for a seed. Records hold the fields of ``inference.avsc`` /
``feedback.avsc``; the sinks (:mod:`~prefpair.simulate.kafka`, :mod:`~prefpair.simulate.log`)
only carry them somewhere, so both see the same traffic.

Requests arrive as a Poisson process over ``spec.days``. Each shows 2-4 candidates from the
planted models (lengths drawn independently of the model) in a random order. Source types judge
on their own schedule: an end user after ~30 s, a model judge after ~5 s, annotators after ~1 h,
a reward model after ~1 s (event time); an update or delete comes a minute after its judgment.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prefpair.schemas.registry import FEEDBACK
from prefpair.schemas.wire import SINGLE_OBJECT_MAGIC, SingleObjectCodec
from prefpair.simulate.spec import (
    APP_USER,
    HUMAN_ANNOTATOR,
    MODEL_JUDGE,
    REWARD_MODEL,
    SOURCE_TYPES,
    TrafficSpec,
)

INFERENCE_EVENT, FEEDBACK_EVENT, POISON = "inference", "feedback", "poison"
DAY_MS = 86_400_000
FOLLOW_UP_MS = 60_000
"""An update or delete comes this long after the judgment it changes."""
THUMBS_CONFIG = {"type": "CONTINUOUS", "min": 0.0, "max": 1.0}
MIN_TEXT = 40
"""Shortest candidate text, in characters."""

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
# (mean latency in ms, sigma of its log) of each source type's judgments, in event time
LATENCY = {APP_USER: (30_000.0, 1.0), MODEL_JUDGE: (5_000.0, 0.5), HUMAN_ANNOTATOR: (3_600_000.0, 0.7),
           REWARD_MODEL: (1_000.0, 0.3)}  # fmt: skip


@dataclass(slots=True)
class SimEvent:
    """One message as serving code (or a buggy producer) sends it.

    ``record``: the contract event (inference or feedback fields), None for poison.
    ``produced_ms``: when it is sent (the Kafka record time; events come in this order).
    ``key``: the Kafka key (the request id). ``value``: poison's raw bytes.
    ``early``: feedback sent before its inference. ``orphan``: feedback whose inference never comes.
    """

    kind: str
    produced_ms: int
    key: str
    record: dict[str, Any] | None = None
    value: bytes = b""
    early: bool = False
    orphan: bool = False


@dataclass
class SimulationStats:
    """What a sink sent or wrote, by kind."""

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

    @property
    def events(self) -> int:
        return self.inferences + self.feedback_events + self.malformed

    def count(self, event: SimEvent) -> None:
        if event.kind == INFERENCE_EVENT:
            self.inferences += 1
            return
        if event.kind == POISON:
            self.malformed += 1
            return
        record = event.record or {}
        op = record["op"]
        if op == "CREATE":
            self.feedback += 1
            source = record["source"]["type"]
            self.by_source[source] = self.by_source.get(source, 0) + 1
        elif op == "UPDATE":
            self.updates += 1
        else:
            self.deletes += 1
        self.early_feedback += event.early
        self.lost_inferences += event.orphan


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x > -700 else 0.0


class _Filler:
    """A long seeded text of FILLER sentences; slices of it are prompts and answers."""

    def __init__(self, rng: random.Random, longest: int) -> None:
        size = max(65_536, 4 * longest)
        parts: list[str] = []
        starts: list[int] = []
        length = 0
        while length < size:
            starts.append(length)
            sentence = rng.choice(FILLER)
            parts.append(sentence)
            length += len(sentence) + 1
        self.text = " ".join(parts)
        self.starts = starts

    def take(self, rng: random.Random, head: str, length: int) -> str:
        """``length`` characters: ``head``, then filler from a random sentence start."""
        room = bisect.bisect_right(self.starts, len(self.text) - length)
        start = self.starts[rng.randrange(room)]
        return (head + self.text[start : start + length])[:length]


Draw = Callable[[], dict[str, Any]]
"""Draws a verdict (the judgment's fields); called again for an update (a second look)."""


class Traffic:
    """The events of ``spec`` in production order; iterating again gives the same events."""

    def __init__(self, spec: TrafficSpec | None = None) -> None:
        self.spec = spec if spec is not None else TrafficSpec()

    def __iter__(self) -> Iterator[SimEvent]:
        return _Generator(self.spec).events()

    def inference_records(self) -> Iterator[dict[str, Any]]:
        """Only the inference events, in order (for load that needs requests and no feedback)."""
        return (e.record for e in self if e.kind == INFERENCE_EVENT and e.record is not None)


class _Generator:
    def __init__(self, spec: TrafficSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.models = [(key.partition(":")[0], key.partition(":")[2] or None, s) for key, s in spec.models.items()]
        self.filler = _Filler(self.rng, max(spec.prompt_chars, 4 * spec.candidate_chars))
        self.feedback_ids = itertools.count()
        self.shares = {s: spec.source_shares.get(s, 0.0) for s in SOURCE_TYPES}
        bounds = list(itertools.accumulate(self.shares.values()))
        self.intervals = {s: (hi - self.shares[s], hi) for s, hi in zip(SOURCE_TYPES, bounds, strict=True)}
        self._shared_draw = 0.0

    # ------------------------------------------------------------------ the stream
    def events(self) -> Iterator[SimEvent]:
        spec, rng = self.spec, self.rng
        lost = set(rng.sample(range(spec.requests), spec.orphans))
        mean_gap_ms = spec.days * DAY_MS / spec.requests
        heap: list[tuple[int, int, SimEvent]] = []
        order = itertools.count()
        clock = float(spec.start_ms)
        last = spec.start_ms
        for r in range(spec.requests):
            clock += rng.expovariate(1.0 / mean_gap_ms)
            ts = int(clock)
            while heap and heap[0][0] <= ts:  # every later event is sent at ts or after
                yield heapq.heappop(heap)[2]
            for event in self._request(r, ts, r in lost):
                heapq.heappush(heap, (event.produced_ms, next(order), event))
        while heap:
            produced, _, event = heapq.heappop(heap)
            last = max(last, produced)
            yield event
        for i, (key, value) in enumerate(malformed_messages(spec.malformed)):
            yield SimEvent(POISON, max(last, int(clock)) + 1 + i, key, value=value)

    # ------------------------------------------------------------------ one request
    def _request(self, r: int, ts: int, lost: bool) -> list[SimEvent]:
        spec, rng, filler = self.spec, self.rng, self.filler
        topic = rng.choice(TOPICS)
        ask = rng.choice(ASKS).format(t=topic)
        n = rng.randint(spec.min_candidates, spec.max_candidates)
        ids = [f"c{i}" for i in range(n)]
        picked = [self.models[rng.randrange(len(self.models))] for _ in range(n)]
        log_median = math.log(spec.candidate_chars)
        lengths = [
            min(4 * spec.candidate_chars, max(MIN_TEXT, int(rng.lognormvariate(log_median, spec.length_spread))))
            for _ in range(n)
        ]
        shown = list(range(n))
        rng.shuffle(shown)
        place = [0] * n
        for position, i in enumerate(shown):
            place[i] = position
        candidates = [
            {
                "candidate_id": ids[i],
                "text": filler.take(rng, f"On {topic}: ", lengths[i]),
                "model_name": name,
                "model_version": version,
                "temperature": rng.choice((0.2, 0.7, 1.0)),
                "top_p": 0.95,
                "max_tokens": 1024,
                "seed": rng.randrange(1 << 31),
                "finish_reason": "stop",
                "completion_tokens": lengths[i] // 4,
                "latency_ms": round(rng.uniform(200.0, 2500.0), 1),
            }
            for i, (name, version, _) in enumerate(picked)
        ]
        request_id = f"req-{spec.seed}-{r:08d}"
        user_id = f"user-{rng.randrange(spec.users):04d}"
        record: dict[str, Any] = {
            "event_id": f"inf-{spec.seed}-{r:08d}",
            "request_id": request_id,
            "timestamp_ms": ts,
            "system_prompt": rng.choice(spec.system_prompts),
            "candidates": candidates,
            "presentation_order": [ids[i] for i in shown],
            "user_id": user_id,
            "session_id": f"sess-{rng.randrange(spec.users * 5):05d}",
            "environment": rng.choice(("production", "production", "staging")),
            "tags": [topic.split()[-1].lower()],
            "metadata": {"app": "prefpair-sim", "region": rng.choice(("eu", "us"))},
        }
        prompt = filler.take(rng, ask + " ", spec.prompt_chars)
        if rng.random() < spec.chat_share:
            record["messages"] = [
                {"role": "user", "content": rng.choice(ASKS).format(t=topic)},
                {"role": "assistant", "content": filler.take(rng, "", 200)},
                {"role": "user", "content": prompt},
            ]
        else:
            record["prompt"] = prompt
        strength = [s for _, _, s in picked]
        log_length = [math.log(length / spec.candidate_chars) for length in lengths]

        def utility(source: str) -> list[float]:
            lb, pb = spec.length_bias_of(source), spec.position_bias_of(source)
            return [strength[i] + lb * log_length[i] - pb * place[i] for i in range(n)]

        judge = _Judging(self, request_id, ts, ids, user_id)
        if lost:  # serving crashed before logging the inference; the user's pick still arrives
            judge.user_pick(utility(APP_USER), shown, follow_ups=False)
            return [SimEvent(FEEDBACK_EVENT, e.produced_ms, request_id, e.record, orphan=True) for e in judge.events]
        for source in SOURCE_TYPES:
            if not self._judges(source):
                continue
            if source == APP_USER:
                judge.app_user(utility(APP_USER), shown)
            elif source == MODEL_JUDGE:
                judge.model_judge(utility(MODEL_JUDGE))
            elif source == HUMAN_ANNOTATOR:
                judge.annotators(utility(HUMAN_ANNOTATOR))
            else:
                judge.reward_model([strength[i] + spec.length_bias_of(REWARD_MODEL) * log_length[i] for i in range(n)])
        produced = ts
        if judge.events and rng.random() < spec.early_feedback_share:  # logged after the first reaction to it
            lag = rng.expovariate(1.0 / spec.early_lag_ms) if spec.early_lag_ms else 0.0
            produced = min(e.produced_ms for e in judge.events) + 1 + int(lag)
        out = [SimEvent(INFERENCE_EVENT, produced, request_id, record)]
        for event in judge.events:
            event.early = event.produced_ms < produced
            out.append(event)
        return out

    def _judges(self, source: str) -> bool:
        """Whether ``source`` judges the request: its own draw, or (disjoint sources) its slice of one draw."""
        if self.spec.disjoint_sources:
            if source == SOURCE_TYPES[0]:
                self._shared_draw = self.rng.random()
            low, high = self.intervals[source]
            return low <= self._shared_draw < high
        return self.rng.random() < self.shares[source]


class _Judging:
    """The judgments of one request, as feedback events (creates and their follow-ups)."""

    def __init__(self, gen: _Generator, request_id: str, ts: int, ids: list[str], user_id: str) -> None:
        self.gen, self.spec, self.rng = gen, gen.spec, gen.rng
        self.request_id, self.ts, self.ids, self.user_id = request_id, ts, ids, user_id
        self.events: list[SimEvent] = []

    def _latency(self, source: str) -> int:
        mean, sigma = LATENCY[source]
        return int(self.rng.lognormvariate(math.log(mean), sigma))

    def _pairwise(self, utility: list[float], a: int, b: int, *, ties: bool) -> Draw:
        def draw() -> dict[str, Any]:
            roll = self.rng.random()
            outcome = "PREFERRED"
            if ties and roll < self.spec.tie_share:
                outcome = "TIE"
            elif ties and roll < self.spec.tie_share + self.spec.both_bad_share:
                outcome = "BOTH_BAD"
            a_wins = self.rng.random() < _sigmoid(utility[a] - utility[b])
            win, lose = (a, b) if a_wins else (b, a)
            return {"kind": "PAIRWISE", "outcome": outcome, "chosen_id": self.ids[win], "rejected_id": self.ids[lose]}

        return draw

    def _ranking(self, utility: list[float]) -> Draw:
        def draw() -> dict[str, Any]:  # Plackett-Luce: sort by utility plus Gumbel noise
            noisy = [u - math.log(max(self.rng.expovariate(1.0), 1e-300)) for u in utility]
            ranked = sorted(range(len(utility)), key=lambda i: -noisy[i])
            return {"kind": "RANKING", "ranking": [[self.ids[i]] for i in ranked]}

        return draw

    def _add(self, source: dict[str, Any], key: str, verdict: dict[str, Any], redraw: Draw, *,
             follow_ups: bool = True, **extra: Any) -> None:  # fmt: skip
        spec, rng = self.spec, self.rng
        feedback_id = f"fb-{spec.seed}-{next(self.gen.feedback_ids):08d}"
        ts = self.ts + self._latency(source["type"])
        base = {"feedback_id": feedback_id, "request_id": self.request_id}
        create = {"event_id": f"{feedback_id}-c", **base, "op": "CREATE", "timestamp_ms": ts, "key": key,
                  **verdict, **extra, "source": source}  # fmt: skip
        self.events.append(SimEvent(FEEDBACK_EVENT, ts, self.request_id, create))
        if not follow_ups:
            return
        roll = rng.random()
        later = ts + FOLLOW_UP_MS
        if roll < spec.delete_share:
            delete = {"event_id": f"{feedback_id}-d", **base, "op": "DELETE", "timestamp_ms": later}
            self.events.append(SimEvent(FEEDBACK_EVENT, later, self.request_id, delete))
        elif roll < spec.delete_share + spec.update_share:
            update = {"event_id": f"{feedback_id}-u", **base, "op": "UPDATE", "timestamp_ms": later, **redraw(),
                      "comment": "revised after a second look"}  # fmt: skip
            self.events.append(SimEvent(FEEDBACK_EVENT, later, self.request_id, update))

    # ------------------------------------------------------------------ source types
    def user_pick(self, utility: list[float], shown: list[int], *, follow_ups: bool = True) -> None:
        """The end user picks between the first two answers shown (or calls it a tie, or both bad)."""
        draw = self._pairwise(utility, shown[0], shown[1], ties=True)
        self._add({"type": APP_USER, "source_id": self.user_id}, "preference", draw(), draw, follow_ups=follow_ups)

    def app_user(self, utility: list[float], shown: list[int]) -> None:
        rng, spec = self.rng, self.spec
        if rng.random() >= spec.user_thumbs_share:
            self.user_pick(utility, shown)
            return
        target = rng.randrange(len(utility))  # a thumbs up or down on one answer

        def draw() -> dict[str, Any]:
            up = rng.random() < _sigmoid(utility[target])
            return {"kind": "SCORE", "candidate_id": self.ids[target], "score": 1.0 if up else 0.0}

        verdict = draw()
        extra: dict[str, Any] = {"config": THUMBS_CONFIG}
        if verdict["score"] == 0.0:
            extra["comment"] = "not quite"
            if rng.random() < spec.correction_share:
                extra["correction"] = self.gen.filler.take(rng, "A corrected answer: ", 160)
        self._add({"type": APP_USER, "source_id": self.user_id}, "user_rating", verdict, draw, **extra)

    def model_judge(self, utility: list[float]) -> None:
        a, b = self.rng.sample(range(len(utility)), 2)
        draw = self._pairwise(utility, a, b, ties=False)
        source = {"type": MODEL_JUDGE, "model": "judge-xl", "model_version": "3",
                  "run_id": f"judge-run-{self.rng.randrange(50)}"}  # fmt: skip
        self._add(source, "judge_preference", draw(), draw)

    def annotators(self, utility: list[float]) -> None:
        spec, rng = self.spec, self.rng
        count = spec.annotators_per_item if rng.random() < spec.second_annotator_share else 1
        draw = self._ranking(utility)
        first: dict[str, Any] | None = None
        for annotator in rng.sample(range(spec.annotators), count):
            verdict = draw()
            if first is None:
                first = verdict
            elif spec.annotator_copy_share > 0 and rng.random() < spec.annotator_copy_share:
                verdict = first  # raters whose verdicts agree beyond the shared truth
            self._add({"type": HUMAN_ANNOTATOR, "source_id": f"annotator-{annotator}"}, "ranking", verdict, draw)

    def reward_model(self, expected: list[float]) -> None:
        """A score per candidate: strength and length (never the place), plus noise."""
        for i, mean in enumerate(expected):

            def draw(i: int = i, mean: float = mean) -> dict[str, Any]:
                score = round(mean + self.rng.gauss(0.0, 0.5), 4)
                return {"kind": "SCORE", "candidate_id": self.ids[i], "score": score}

            self._add({"type": REWARD_MODEL, "model": "rm", "model_version": "v3"}, "reward", draw(), draw)


def malformed_messages(count: int) -> list[tuple[str, bytes]]:
    """``(key, value)`` of bytes a buggy or foreign producer might send: each must become a dead letter."""
    codec = SingleObjectCodec()
    contract_violation = codec.encode(FEEDBACK, {
        "event_id": "bad-1", "feedback_id": "bad-1", "op": "CREATE", "request_id": "req-unknown",
        "timestamp_ms": 0, "key": None, "kind": None, "outcome": None, "chosen_id": None,
        "rejected_id": None, "ranking": None, "candidate_id": None, "score": None, "value": None,
        "comment": None, "correction": None, "config": None, "source": None, "metadata": {},
    })  # fmt: skip
    kinds = [
        b'{"request_id": "json-instead-of-avro"}',
        SINGLE_OBJECT_MAGIC + b"\x00" * 8 + b"\x02xx",  # unknown fingerprint
        contract_violation[:14],  # truncated body
        contract_violation,  # valid Avro, breaks the contract (no key, kind or source)
    ]
    return [(f"poison-{i}", kinds[i % len(kinds)]) for i in range(count)]
