"""Implicit signals with a planted truth: each rule's signals point at the better output with a known
probability (its planted accuracy), and explicit judgments on the same requests tell the truth.

Per rule, ``requests_per_rule`` requests (two outputs, ``a`` and ``b``, one truly better):

* ``copy``, ``select``, ``conversion``: the signal names the better output with the rule's accuracy;
  a ``HUMAN_ANNOTATOR`` pairwise judgment on the same request names the better one;
* ``dwell``: a long read (20 s) of the output the signal favours, a short one (1 s) of the other;
* ``regenerate``: a parent request with one output and its regeneration (a child request, one
  output, the same prompt) that the user keeps: the child's output is the better one with the
  rule's accuracy; a ``REWARD_MODEL`` scores both outputs (1 the better, 0 the worse), key ``reward``;
* ``edit``: the user edits an output (no explicit judgment compares an edit).

So a rule's agreement with the explicit judgments, as the report measures it, estimates its planted
accuracy. :func:`planted_actions` is deterministic for a seed; :func:`write_planted` writes them as
a committed log segment (:class:`~prefpair.simulate.builder.LogBuilder`), :func:`send_planted` logs
them through the SDK (the demo).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefpair.producers import PreferenceLogger
from prefpair.simulate.builder import LogBuilder

DEFAULT_ACCURACY: Mapping[str, float] = {
    "regenerate": 0.75, "copy": 0.85, "select": 0.9, "conversion": 0.8, "dwell": 0.65, "edit": 1.0,
}  # fmt: skip
"""Planted accuracy per rule (of the shipped rules file): how often its signal favours the better output."""
LONG_READ_MS, SHORT_READ_MS = 20_000, 1_000
MODELS = ("chat-large", "chat-small")


@dataclass(frozen=True)
class SignalPlan:
    """How many requests per rule, each rule's planted accuracy, the seed and the first timestamp."""

    requests_per_rule: int = 200
    accuracy: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_ACCURACY))
    seed: int = 0
    start_ms: int = 1_790_000_000_000
    explicit_share: float = 1.0
    """Share of the requests that get an explicit judgment (the others give implicit pairs alone)."""


Action = tuple[str, dict[str, Any]]
"""``("inference" | "pairwise" | "score" | "signal", arguments)``."""


def planted_actions(plan: SignalPlan) -> list[Action]:
    """The requests, explicit judgments and signals of ``plan``, in the order serving code sends them."""
    rng = random.Random(plan.seed)
    actions: list[Action] = []
    clock = iter(range(plan.start_ms, plan.start_ms + 10**12, 1000))

    def request(request_id: str, prompt: str, ids: str, parent: str | None = None) -> None:
        candidates = [
            {"candidate_id": c, "text": f"{prompt} answer {c} ({request_id})", "model_name": MODELS[i % 2]}
            for i, c in enumerate(ids)
        ]  # fmt: skip
        actions.append(("inference", {"request_id": request_id, "prompt": prompt, "candidates": candidates,
                                       "parent_request_id": parent, "timestamp_ms": next(clock)}))  # fmt: skip

    for rule, accuracy in plan.accuracy.items():
        for i in range(plan.requests_per_rule):
            rid = f"{rule}-{plan.seed}-{i}"
            prompt = f"Question {i} for the {rule} rule (seed {plan.seed})?"
            right = rng.random() < accuracy
            explicit = plan.explicit_share >= 1 or rng.random() < plan.explicit_share
            if rule == "regenerate":
                child = f"{rid}-again"
                request(rid, prompt, "x")
                request(child, prompt, "y", parent=rid)
                better, worse = ((child, "y"), (rid, "x")) if right else ((rid, "x"), (child, "y"))
                for (req, cand), score in ((better, 1.0), (worse, 0.0)) if explicit else ():
                    actions.append(("score", {"request_id": req, "candidate": cand, "score": score, "key": "reward",
                                              "timestamp_ms": next(clock)}))  # fmt: skip
                continue
            request(rid, prompt, "ab")
            best = rng.choice("ab")
            other = "b" if best == "a" else "a"
            favoured = best if right else other
            if rule != "edit" and explicit:
                actions.append(("pairwise", {"request_id": rid, "chosen": best, "rejected": other,
                                             "timestamp_ms": next(clock)}))  # fmt: skip
            signal: dict[str, Any] = {"request_id": rid, "kind": rule, "timestamp_ms": next(clock)}
            if rule == "dwell":
                actions.append(("signal", {**signal, "candidate": favoured, "dwell_ms": LONG_READ_MS}))
                actions.append(("signal", {**signal, "candidate": "b" if favoured == "a" else "a",
                                           "dwell_ms": SHORT_READ_MS, "timestamp_ms": next(clock)}))  # fmt: skip
            elif rule == "edit":
                actions.append(("signal", {**signal, "candidate": other, "text": f"{prompt} (the user's own answer)"}))
            else:
                actions.append(("signal", {**signal, "candidate": favoured,
                                           **({"value": 25.0} if rule == "conversion" else {})}))  # fmt: skip
    return actions


def write_planted(log_dir: Path, plan: SignalPlan, partition: int = 0) -> int:
    """Write ``plan``'s actions as one committed segment of ``partition``; returns how many were written."""
    log = LogBuilder(log_dir, partition, start_ms=plan.start_ms)
    actions = planted_actions(plan)
    for kind, args in actions:
        ts = args.get("timestamp_ms")
        if kind == "inference":
            log.inference(args["request_id"], prompt=args["prompt"], candidates=args["candidates"], ts=ts,
                          parent_request_id=args["parent_request_id"])  # fmt: skip
        elif kind == "pairwise":
            log.pairwise(args["request_id"], args["chosen"], args["rejected"], source="HUMAN_ANNOTATOR", ts=ts)
        elif kind == "score":
            log.score(args["request_id"], args["candidate"], args["score"], key=args["key"], source="REWARD_MODEL",
                      ts=ts, config={"type": "CONTINUOUS", "min": 0.0, "max": 1.0})  # fmt: skip
        else:
            log.signal(args["request_id"], args["kind"], args.get("candidate"), value=args.get("value"),
                       text=args.get("text"), dwell_ms=args.get("dwell_ms"), ts=ts)  # fmt: skip
    log.commit()
    return len(actions)


def send_planted(logger: PreferenceLogger, plan: SignalPlan) -> dict[str, int]:
    """Log ``plan``'s actions through the SDK, stamped with the time of sending; returns how many of each
    kind were sent."""
    sent: dict[str, int] = {}
    for kind, planned in planted_actions(plan):
        args = {**planned, "timestamp_ms": None}  # sent now: event time is the time of sending
        if kind == "inference":
            logger.log_inference(**args)
        elif kind == "pairwise":
            logger.log_preference(args["request_id"], chosen=args["chosen"], rejected=args["rejected"],
                                  source="HUMAN_ANNOTATOR", timestamp_ms=args["timestamp_ms"])  # fmt: skip
        elif kind == "score":
            logger.log_feedback(args["request_id"], key=args["key"], score=args["score"], candidate=args["candidate"],
                                config={"type": "CONTINUOUS", "min": 0.0, "max": 1.0}, source="REWARD_MODEL",
                                timestamp_ms=args["timestamp_ms"])  # fmt: skip
        else:
            logger.log_signal(args.pop("request_id"), args.pop("kind"), **args)
        sent[kind] = sent.get(kind, 0) + 1
    return sent
