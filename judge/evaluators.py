"""Evaluators: what answers a judge's questions. A Python callable, or an OpenAI-compatible HTTP API
(:mod:`prefpair.judge.endpoint`).

A Python evaluator is a function ``(Question) -> answer``: a mapping (the JSON object of
:mod:`prefpair.judge.questions`), its JSON text, or a whole :class:`~prefpair.judge.questions.Reply`
(to report tokens). ``--evaluator`` names it as ``module:function``, or by the name of an entry point
of the ``prefpair.judges`` group, which is how a package ships judges::

    [project.entry-points."prefpair.judges"]
    strict-grader = "mypackage.judges:strict_grader"

prefpair ships ``length`` (:func:`prefpair.judge.examples.longer_is_better`), a deterministic judge
for demos and tests.
"""

from __future__ import annotations

import importlib
import json
import threading
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Protocol

from prefpair.errors import PrefpairError
from prefpair.judge.exceptions import EvaluatorFailedError, EvaluatorLoadError
from prefpair.judge.questions import Question, Reply

ENTRY_POINT_GROUP = "prefpair.judges"

EvaluatorFunction = Callable[[Question], Any]


class Evaluator(Protocol):
    """Answers questions; called from several threads at once."""

    model: str | None
    """The judging model's name, recorded as the feedback source's ``model``."""

    def ask(self, question: Question) -> Reply: ...


class RateLimiter:
    """At most ``rate`` calls of :meth:`wait` return per second, spaced evenly, across threads."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 0.0 if rate is None else 1.0 / rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if self.interval <= 0:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


class CallableEvaluator:
    """A Python function as an evaluator."""

    def __init__(self, function: EvaluatorFunction, name: str, limiter: RateLimiter | None = None) -> None:
        self.function = function
        self.name = name
        self.model: str | None = name
        self.limiter = limiter or RateLimiter(None)

    def ask(self, question: Question) -> Reply:
        self.limiter.wait()
        try:
            answer = self.function(question)
        except PrefpairError:
            raise
        except Exception as exc:
            raise EvaluatorFailedError(self.name, question.request_id, question.order, exc) from exc
        if isinstance(answer, Reply):
            return answer
        raw = answer if isinstance(answer, str) else json.dumps(answer, default=str)
        return Reply(answer=answer, raw=raw)


def load_function(spec: str) -> EvaluatorFunction:
    """The function ``spec`` names: ``module:function`` (dots for attributes), or an entry point name."""
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise EvaluatorLoadError(spec, f"cannot import module {module_name!r}: {exc}") from None
        for part in attribute.split("."):
            if not hasattr(target, part):
                raise EvaluatorLoadError(spec, f"module {module_name!r} has no attribute {attribute!r}")
            target = getattr(target, part)
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
        if not found:
            known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
            raise EvaluatorLoadError(
                spec, f"no entry point of group {ENTRY_POINT_GROUP!r} has that name (installed: "
                f"{', '.join(known) or 'none'}); or give module:function",
            )  # fmt: skip
        try:
            target = found[0].load()
        except Exception as exc:  # an entry point's import can fail in any way
            raise EvaluatorLoadError(spec, f"entry point {found[0].value!r} failed to load: {exc}") from None
    if not callable(target):
        raise EvaluatorLoadError(spec, f"{type(target).__name__} is not callable")
    function: EvaluatorFunction = target
    return function
