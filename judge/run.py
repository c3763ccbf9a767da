"""A judge run: select logged inferences, ask the evaluator, write each judgment once as feedback.

:func:`run_judge` plans every judgment of the run (:func:`~prefpair.judge.questions.plan`), skips
those the run state says Kafka already has (after recovering a crashed attempt's tail,
:mod:`prefpair.judge.state`), asks the remaining questions on ``concurrency`` threads under the
rate limit, and writes each finished judgment through the producer SDK
(:class:`~prefpair.producers.PreferenceLogger`) with its deterministic feedback id. Every
``checkpoint_every`` judgments it waits for Kafka's acknowledgements and then saves the state.
An evaluator that fails for good (an unparseable answer, an endpoint refusing, retries exhausted)
stops the run after a last checkpoint: the same command resumes it.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from prefpair.config import Settings
from prefpair.judge.config import JudgeConfig
from prefpair.judge.endpoint import HttpEvaluator, load_template
from prefpair.judge.evaluators import CallableEvaluator, Evaluator, RateLimiter, load_function
from prefpair.judge.exceptions import JudgeConfigError, JudgeError
from prefpair.judge.questions import BOTH_BAD, TIE, Reply, Task, Verdict, combine_pairwise, parse_verdict, plan
from prefpair.judge.select import select_inferences
from prefpair.judge.state import RunDirectory, RunState, Totals, begin_attempt, recover
from prefpair.producers import FailedEvent, PreferenceLogger
from prefpair.producers.experiments import list_experiments
from prefpair.storage import location

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 60.0


@dataclass
class JudgeSummary:
    """What one attempt of a run did, and what the run has cost over all its attempts."""

    run_id: str
    run_dir: str
    kind: str
    key: str
    evaluator: str
    inferences: int = 0
    judgments: int = 0
    written: int = 0
    already_written: int = 0
    recovered: int = 0
    agreed: int = 0
    disagreed: int = 0
    attempt: Totals = field(default_factory=Totals)
    run: Totals = field(default_factory=Totals)
    cost: float = 0.0
    run_cost: float = 0.0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        judged = self.agreed + self.disagreed
        return {
            "run_id": self.run_id,
            "run_dir": self.run_dir,
            "kind": self.kind,
            "key": self.key,
            "evaluator": self.evaluator,
            "inferences": self.inferences,
            "judgments": self.judgments,
            "written": self.written,
            "already_written": self.already_written,
            "recovered": self.recovered,
            "agreement": None if self.kind != "pairwise" else {
                "agreed": self.agreed, "disagreed": self.disagreed,
                "rate": round(self.agreed / judged, 4) if judged else None,
            },
            "questions": self.attempt.questions,
            "retries": self.attempt.retries,
            "prompt_tokens": self.attempt.prompt_tokens,
            "completion_tokens": self.attempt.completion_tokens,
            "cost": round(self.cost, 6),
            "run_totals": {**vars(self.run), "cost": round(self.run_cost, 6)},
            "seconds": round(self.seconds, 3),
        }  # fmt: skip


def make_evaluator(config: JudgeConfig, template: str | None) -> Evaluator:
    """The evaluator the config names, under the config's rate limit."""
    limiter = RateLimiter(config.rate)
    if config.endpoint is not None:
        assert template is not None
        return HttpEvaluator(config, template, limiter)
    assert config.evaluator is not None
    return CallableEvaluator(load_function(config.evaluator), config.evaluator, limiter)


def run_judge(
    settings: Settings,
    config: JudgeConfig,
    *,
    evaluator: Evaluator | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_plan: Callable[[int, int], None] | None = None,
) -> JudgeSummary:
    """Run (or resume) the judge run ``config`` defines; returns what it did. See the module docstring.

    ``on_plan(judgments, already_written)`` is called once the run is planned, ``on_progress(n)``
    as judgments are written (a progress bar's ``total``, ``initial`` and ``update``).
    """
    started = time.monotonic()
    if evaluator is None:
        config.check_evaluator()
    template = load_template(config.prompt_template, config.kind) if config.endpoint is not None else None
    if config.experiment_id is not None:
        check_experiment(settings, config.experiment_id)
    run_id = config.resolved_run_id(template)
    evaluator = evaluator or make_evaluator(config, template)
    run_dir = RunDirectory(settings.home / "judge" / run_id)
    summary = JudgeSummary(run_id, str(run_dir.path), config.kind, config.feedback_key, config.evaluator_name)
    log = location(config.log_dir or settings.log_dir, settings.s3_options())
    inferences = select_inferences(log, config.selection)
    tasks = plan(inferences, kind=config.kind, key=config.feedback_key, run_id=run_id, seed=config.selection.seed,
                 score_range=(config.score_min, config.score_max))  # fmt: skip
    summary.inferences, summary.judgments = len(inferences), len(tasks)
    with run_dir.locked():
        state = run_dir.load(run_id, config.definition(template), settings.feedback_topic)
        summary.recovered = recover(settings, state)
        state.finished = False
        begin_attempt(settings, state)
        run_dir.save(state)
        todo = [t for t in tasks if t.feedback_id not in state.done]
        summary.already_written = len(tasks) - len(todo)
        if on_plan is not None:
            on_plan(len(tasks), summary.already_written)
        _Attempt(settings, config, evaluator, run_dir, state, summary, on_progress).run(todo)
        summary.run = state.totals
    summary.cost = _cost(config, summary.attempt)
    summary.run_cost = _cost(config, summary.run)
    summary.seconds = time.monotonic() - started
    return summary


def check_experiment(settings: Settings, experiment_id: str) -> None:
    """Refuse an experiment id that no definition on the experiments topic has: a mistyped id would
    otherwise start an experiment of its own, unnamed, beside the one meant."""
    if not any(e.experiment_id == experiment_id for e in list_experiments(settings)):
        raise JudgeConfigError(
            "experiment_id", f"no experiment {experiment_id!r} on topic {settings.experiments_topic} "
            "(define it first: prefpair experiments create)",
        )  # fmt: skip


def _cost(config: JudgeConfig, totals: Totals) -> float:
    return (totals.prompt_tokens * config.prompt_price_per_1k + totals.completion_tokens
            * config.completion_price_per_1k) / 1000  # fmt: skip


class _Attempt:
    """One attempt: questions on a thread pool, judgments sent from this thread, checkpoints."""

    def __init__(
        self, settings: Settings, config: JudgeConfig, evaluator: Evaluator, run_dir: RunDirectory,
        state: RunState, summary: JudgeSummary, on_progress: Callable[[int], None] | None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.config = config
        self.evaluator = evaluator
        self.run_dir = run_dir
        self.state = state
        self.summary = summary
        self.on_progress = on_progress or (lambda n: None)
        self.unsaved = Totals()  # counted since the last checkpoint
        self.sent: list[str] = []  # feedback ids sent since the last checkpoint
        self.failed: dict[str, FailedEvent] = {}
        self._lock = threading.Lock()

    def _on_failure(self, event: FailedEvent) -> None:
        if event.feedback_id is not None:
            with self._lock:
                self.failed[event.feedback_id] = event

    def run(self, todo: list[Task]) -> None:
        source = {
            "type": self.config.source_type,
            "source_id": self.config.evaluator_name,
            "model": self.evaluator.model,
            "model_version": self.config.evaluator_version,
            "run_id": self.state.run_id,
        }
        replies: dict[int, list[Reply | None]] = {i: [None] * len(t.questions) for i, t in enumerate(todo)}
        questions = [(i, q) for i, t in enumerate(todo) for q in range(len(t.questions))]
        failure: BaseException | None = None
        with PreferenceLogger(self.settings, on_delivery_error=self._on_failure) as logger:
            pool = ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="prefpair-judge")
            in_flight: dict[Future[Reply], tuple[int, int]] = {}
            position = 0
            try:
                while (position < len(questions) or in_flight) and failure is None:
                    while position < len(questions) and len(in_flight) < self.config.concurrency:
                        i, q = questions[position]
                        in_flight[pool.submit(self.evaluator.ask, todo[i].questions[q])] = (i, q)
                        position += 1
                    finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in finished:
                        i, q = in_flight.pop(future)
                        try:
                            reply = future.result()
                        except BaseException as exc:  # the evaluator's own errors end the run too
                            failure = failure or exc
                            continue
                        self._count(reply)
                        replies[i][q] = reply
                        if failure is None and all(r is not None for r in replies[i]):
                            try:
                                self._send(logger, todo[i], [r for r in replies[i] if r is not None], source)
                            except JudgeError as exc:
                                failure = exc
                            del replies[i]
                    if len(self.sent) >= self.config.checkpoint_every:
                        self._checkpoint(logger)
            except KeyboardInterrupt as exc:
                failure = exc
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
                try:
                    self._checkpoint(logger, final=failure is None)
                except JudgeError as exc:
                    if failure is None:
                        raise
                    log.error("prefpair judge: %s", exc)  # the evaluator's failure below is the one to raise
        if failure is not None:
            raise failure

    def _count(self, reply: Reply) -> None:
        self.unsaved.questions += 1
        self.unsaved.retries += reply.retries
        self.unsaved.prompt_tokens += reply.prompt_tokens
        self.unsaved.completion_tokens += reply.completion_tokens
        self.summary.attempt.questions += 1
        self.summary.attempt.retries += reply.retries
        self.summary.attempt.prompt_tokens += reply.prompt_tokens
        self.summary.attempt.completion_tokens += reply.completion_tokens

    def _send(self, logger: PreferenceLogger, task: Task, replies: list[Reply], source: dict[str, Any]) -> None:
        verdicts = [parse_verdict(q, r) for q, r in zip(task.questions, replies, strict=True)]
        tokens = sum(r.prompt_tokens + r.completion_tokens for r in replies)
        metadata = {"judge_run_id": self.state.run_id, "judge_kind": self.config.kind, "judge_tokens": str(tokens)}
        served = sorted({r.model for r in replies if r.model})
        if served:
            metadata["judge_served_model"] = ",".join(served)
        for n, (question, verdict) in enumerate(zip(task.questions, verdicts, strict=True), start=1):
            metadata[f"judge_order_{n}"] = ",".join(question.order)
            if verdict.winner is not None:
                metadata[f"judge_verdict_{n}"] = verdict.winner
        common: dict[str, Any] = {"feedback_id": task.feedback_id, "key": self.config.feedback_key,
                                  "source": source, "candidates": task.candidates,
                                  "experiment_id": self.config.experiment_id,
                                  "feedback_group_id": self.config.feedback_group_id}  # fmt: skip
        if self.config.kind == "pairwise":
            first, second = verdicts
            agreed = first.winner == second.winner
            metadata["judge_agreement"] = "true" if agreed else "false"
            if agreed:
                self.summary.agreed += 1
            else:
                self.summary.disagreed += 1
            outcome = combine_pairwise(first, second)
            chosen, rejected = task.candidates
            if outcome not in (TIE, BOTH_BAD):
                chosen, rejected = outcome, next(c for c in task.candidates if c != outcome)
            logger.log_preference(
                task.request_id, chosen=chosen, rejected=rejected,
                outcome="PREFERRED" if outcome not in (TIE, BOTH_BAD) else outcome.upper(),
                comment=_reasons(task, verdicts), metadata=metadata, **common,
            )  # fmt: skip
        elif self.config.kind == "score":
            (verdict,) = verdicts
            logger.log_feedback(
                task.request_id, score=verdict.score, candidate=task.candidates[0], comment=verdict.reason,
                config={"type": "CONTINUOUS", "min": self.config.score_min, "max": self.config.score_max},
                metadata=metadata, **common,
            )  # fmt: skip
        else:
            (verdict,) = verdicts
            assert verdict.ranking is not None
            logger.log_ranking(task.request_id, ranking=[list(g) for g in verdict.ranking], comment=verdict.reason,
                               metadata=metadata, **common)  # fmt: skip
        self.sent.append(task.feedback_id)
        self.summary.written += 1
        self.on_progress(1)

    def _checkpoint(self, logger: PreferenceLogger, *, final: bool = False) -> None:
        """Wait for Kafka to acknowledge what was sent, then save the state (done ids, totals)."""
        unresolved = logger.flush(FLUSH_TIMEOUT_S)
        with self._lock:
            failed = dict(self.failed)
        delivered = [fid for fid in self.sent if fid not in failed]
        if unresolved:  # their fate is unknown: the next attempt's recovery finds those that arrived
            delivered = []
        self.state.done.update(delivered)
        self.state.totals.add(self.unsaved)
        self.unsaved = Totals()
        self.sent = []
        self.state.finished = final and not failed and not unresolved
        self.run_dir.save(self.state)
        if failed:
            first = next(iter(failed.values()))
            raise JudgeError(f"{len(failed)} judgment(s) were not delivered to Kafka: {first.reason} "
                             "(run the same command again to resume)")  # fmt: skip
        if unresolved:
            raise JudgeError(f"{unresolved} judgment(s) not acknowledged by Kafka within {FLUSH_TIMEOUT_S:g} s "
                             "(run the same command again to resume)")  # fmt: skip


def _reasons(task: Task, verdicts: list[Verdict]) -> str | None:
    parts = [f"[{','.join(q.order)}] {v.reason}" for q, v in zip(task.questions, verdicts, strict=True) if v.reason]
    return "\n".join(parts) or None


def print_summary(summary: JudgeSummary, stream: Any = None) -> None:
    """The final summary: one JSON line."""
    print(json.dumps(summary.to_json(), sort_keys=False), file=stream or sys.stdout, flush=True)

