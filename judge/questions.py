"""What a judge is asked and what it must answer: questions, replies, answer parsing, and the plan
of a run (which questions, under which feedback id).

Every evaluator, a Python callable or an HTTP model, answers one :class:`Question` with a JSON
object (a Python mapping, or its text):

* pairwise: ``{"winner": "A" | "B" | "tie" | "both_bad"}``, the labels as shown;
* score: ``{"score": <number from min to max>}``;
* ranking: ``{"ranking": ["B", "A", "C"]}``, best first, every label once (``[["A", "B"], "C"]`` ties A and B);

with an optional ``"reason"``. :func:`parse_verdict` turns the answer into candidate ids, or raises
:class:`~prefpair.judge.exceptions.UnparseableAnswerError` saying what was wrong with it.

Pairwise questions are asked twice, once in each presentation order, so a judge that favours the
first (or second) answer shown cancels out: the judgment is the verdict both orders agree on, and a
TIE where they disagree (the verdicts and their agreement go into the feedback's metadata).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import random
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from prefpair.judge.config import JudgeKind
from prefpair.judge.exceptions import UnparseableAnswerError
from prefpair.judge.select import LoggedInference, Response

TIE = "tie"
BOTH_BAD = "both_bad"
LABELS = string.ascii_uppercase
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class Question:
    """One question to an evaluator: a logged prompt and some of its candidates, labelled A, B, ... as shown."""

    kind: JudgeKind
    key: str
    request_id: str
    system_prompt: str | None
    prompt: str
    responses: tuple[Response, ...]
    """The candidates in presentation order: the first is labelled A."""
    score_range: tuple[float, float] = (1.0, 10.0)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(LABELS[: len(self.responses)])

    @property
    def order(self) -> tuple[str, ...]:
        """Candidate ids as shown."""
        return tuple(r.candidate_id for r in self.responses)

    def candidate_of(self, label: str) -> str:
        return self.responses[self.labels.index(label)].candidate_id


@dataclass(frozen=True)
class Reply:
    """An evaluator's answer to one question, and what it cost.

    ``answer``: the JSON object (a mapping) or its text; ``raw``: the answer as received, quoted in errors.
    """

    answer: Any
    raw: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    model: str | None = None
    """The model that answered, as the API names it (often a dated snapshot of the one asked for)."""


@dataclass(frozen=True)
class Verdict:
    """A parsed answer in candidate ids: a pairwise winner (or ``tie`` / ``both_bad``), a score, or a ranking."""

    winner: str | None = None
    score: float | None = None
    ranking: tuple[tuple[str, ...], ...] | None = None
    reason: str | None = None


def answer_object(question: Question, reply: Reply) -> Mapping[str, Any]:
    """The reply's JSON object (a mapping given as is, or text parsed; a ```json fence is allowed)."""
    if isinstance(reply.answer, Mapping):
        return dict(reply.answer)
    if not isinstance(reply.answer, str):
        _fail(question, reply, f"expected a JSON object, got a {type(reply.answer).__name__}")
    text = reply.answer.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(question, reply, f"not JSON ({exc.msg} at character {exc.pos})")
    if not isinstance(value, dict):
        _fail(question, reply, f"expected a JSON object, got a JSON {type(value).__name__}")
    return dict(value)


def parse_verdict(question: Question, reply: Reply) -> Verdict:
    """The verdict the reply gives, in candidate ids; raises UnparseableAnswerError naming the problem."""
    answer = answer_object(question, reply)
    reason = answer.get("reason")
    reason = reason if isinstance(reason, str) and reason.strip() else None
    if question.kind == "pairwise":
        return Verdict(winner=_winner(question, reply, answer), reason=reason)
    if question.kind == "score":
        return Verdict(score=_score(question, reply, answer), reason=reason)
    return Verdict(ranking=_ranking(question, reply, answer), reason=reason)


def _winner(question: Question, reply: Reply, answer: Mapping[str, Any]) -> str:
    allowed = (*question.labels, TIE, BOTH_BAD)
    value = answer.get("winner")
    if not isinstance(value, str):
        _fail(question, reply, f"field 'winner' is {_shown(value)}; expected one of {', '.join(allowed)}")
    spelled = value.strip()
    if spelled.upper() in question.labels:
        return question.candidate_of(spelled.upper())
    if spelled.lower().replace(" ", "_").replace("-", "_") in (TIE, BOTH_BAD):
        return spelled.lower().replace(" ", "_").replace("-", "_")
    _fail(question, reply, f"field 'winner' is {value!r}; expected one of {', '.join(allowed)}")


def _score(question: Question, reply: Reply, answer: Mapping[str, Any]) -> float:
    low, high = question.score_range
    value = answer.get("score")
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        _fail(question, reply, f"field 'score' is {_shown(value)}; expected a number from {low:g} to {high:g}")
    if not low <= value <= high:
        _fail(question, reply, f"field 'score' is {value:g}, outside {low:g} to {high:g}")
    return float(value)


def _ranking(question: Question, reply: Reply, answer: Mapping[str, Any]) -> tuple[tuple[str, ...], ...]:
    value = answer.get("ranking")
    expected = f"expected every label of {', '.join(question.labels)} once, best first"
    if not isinstance(value, list) or not value:
        _fail(question, reply, f"field 'ranking' is {_shown(value)}; {expected}")
    groups: list[tuple[str, ...]] = []
    for group in value:
        members = group if isinstance(group, list) else [group]
        if not members or not all(isinstance(m, str) and m.strip().upper() in question.labels for m in members):
            _fail(question, reply, f"field 'ranking' holds {group!r}; {expected}")
        groups.append(tuple(question.candidate_of(m.strip().upper()) for m in members))
    flat = [c for g in groups for c in g]
    if sorted(flat) != sorted(question.order):
        _fail(question, reply, f"field 'ranking' is {value!r}; {expected}")
    return tuple(groups)


def _shown(value: Any) -> str:
    return "missing" if value is None else repr(value)


def _fail(question: Question, reply: Reply, reason: str) -> NoReturn:
    raise UnparseableAnswerError(question.request_id, question.order, reason, reply.raw)


# --------------------------------------------------------------------------- the plan of a run
@dataclass(frozen=True)
class Task:
    """One judgment to write: its feedback id and the questions it takes (two for a pairwise judgment)."""

    feedback_id: str
    request_id: str
    questions: tuple[Question, ...]
    candidates: tuple[str, ...] = field(default=())


def feedback_id(run_id: str, request_id: str, key: str, candidates: Sequence[str]) -> str:
    """The id of a judgment, the same in every attempt of a run: from run, request, key and candidates (as a set)."""
    material = "\x1f".join([run_id, request_id, key, *sorted(candidates)])
    return "jf-" + hashlib.sha256(material.encode()).hexdigest()[:32]


def plan(
    inferences: Sequence[LoggedInference],
    *,
    kind: JudgeKind,
    key: str,
    run_id: str,
    seed: int,
    score_range: tuple[float, float],
) -> list[Task]:
    """Every judgment of the run, in a fixed order: all pairs of each request's candidates (pairwise,
    each pair in both orders), each candidate (score), or all candidates in a seeded order (ranking)."""
    tasks: list[Task] = []
    for inference in inferences:
        def ask(responses: Sequence[Response], inference: LoggedInference = inference) -> Question:
            return Question(kind, key, inference.request_id, inference.system_prompt, inference.prompt,
                            tuple(responses), score_range)  # fmt: skip

        groups: list[tuple[Response, ...]]
        if kind == "pairwise":
            groups = list(itertools.combinations(inference.responses, 2))
        elif kind == "score":
            groups = [(r,) for r in inference.responses]
        else:
            groups = [inference.responses] if len(inference.responses) >= 2 else []
        for group in groups:
            ids = tuple(r.candidate_id for r in group)
            fid = feedback_id(run_id, inference.request_id, key, ids)
            questions: tuple[Question, ...]
            if kind == "pairwise":
                questions = (ask(group), ask(group[::-1]))
            elif kind == "ranking":
                shown = list(group)
                random.Random(f"{seed}:{fid}").shuffle(shown)
                questions = (ask(shown),)
            else:
                questions = (ask(group),)
            tasks.append(Task(fid, inference.request_id, questions, ids))
    return tasks


def combine_pairwise(first: Verdict, second: Verdict) -> str:
    """The judgment of two orders: the winner (or tie / both_bad) both gave, else a tie (they disagree)."""
    return first.winner if first.winner == second.winner and first.winner is not None else TIE
