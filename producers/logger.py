"""``PreferenceLogger``: what serving code calls to log inferences and feedback.

Every call checks the event against the contract (:mod:`prefpair.schemas.models`), encodes
it (Avro single-object encoding, or Schema Registry framing when a registry URL is set) and
hands it to librdkafka, all in the calling thread, then returns. Bad input raises
:class:`~prefpair.schemas.ValidationError` naming the field before anything is sent. Plain
arguments (dicts, lists, strings, numbers) are encoded as they are and checked without building
the models; anything else goes through the models (:mod:`prefpair.producers.records`).
librdkafka delivers in the background with an idempotent producer (``acks=all``), keyed by
request id so an inference and its feedback land in the same partition number of their topics.

Thread-safe: librdkafka's producer is, and the logger guards its own counters. From asyncio
code the log calls can be made directly on the loop: they take tens of microseconds and never
wait on the network (only a full local queue under ``queue_full="block"`` can wait, up to
``queue_full_timeout``; use ``queue_full="raise"`` on a loop). ``flush`` and ``close`` wait for
the broker: use :meth:`~PreferenceLogger.aflush` / :meth:`~PreferenceLogger.aclose` there.

This module holds the public calls; turning their arguments into checked records is
:mod:`prefpair.producers.events` (the checks: :mod:`prefpair.producers.records`), sending them
and the delivery reports (``flush``, ``close``, ``stats``, ``on_delivery_error``) is
:mod:`prefpair.producers.delivery`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from types import TracebackType
from typing import Any, Self

from prefpair.config import Settings
from prefpair.producers import experiments
from prefpair.producers.delivery import (
    DEFAULT_DELIVERY_TIMEOUT_MS,
    DEFAULT_KEEP_FAILED,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_QUEUE_FULL_TIMEOUT,
    DeliveryReport,
    EventDelivery,
    LoggerStats,
    QueueFullPolicy,
)
from prefpair.producers.events import (
    FEEDBACK_CONTRACT,
    INFERENCE_CONTRACT,
    ConfigLike,
    SourceLike,
    check_score,
    new_event_id,
    new_id,
    outcome_arg,
    ranking_arg,
    source_arg,
    unknown_candidate,
    update_kind,
)
from prefpair.producers.exceptions import FailedEvent
from prefpair.producers.records import encode_checked
from prefpair.schemas.experiments import Experiment
from prefpair.schemas.models import (
    Candidate,
    FeedbackOp,
    FeedbackSource,
    JudgmentKind,
    Message,
    PairwiseOutcome,
    SignalEvent,
    SourceType,
    now_ms,
)
from prefpair.schemas.registry import SIGNAL
from prefpair.schemas.wire import Codec

# The module's public names; the delivery ones are defined in prefpair.producers.delivery.
__all__ = [
    "DEFAULT_DELIVERY_TIMEOUT_MS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_REMEMBER_REQUESTS",
    "DeliveryReport",
    "LoggerStats",
    "PreferenceLogger",
]

DEFAULT_REMEMBER_REQUESTS = 10_000

_candidate_id = itemgetter("candidate_id")


class PreferenceLogger(EventDelivery):
    """Logs inference and feedback events to Kafka for prefpair.

    ``settings``: connection and topics (default: :meth:`Settings.load`, i.e. ``PREFPAIR_*``).
    ``queue_full``: what a call does when librdkafka's local queue is full: ``"block"`` serves
    delivery reports and retries for up to ``queue_full_timeout`` seconds, ``"raise"`` raises
    :class:`QueueFullError` at once. Either way an event is sent or the call raises.
    ``delivery_timeout_ms``: how long librdkafka keeps retrying an event (e.g. while the broker
    is down) before reporting it failed (default: the option in the Kafka config, else 300 s).
    ``on_delivery_error(FailedEvent)``: called for each failed event, from the thread serving
    delivery reports. ``codec``: message framing (default: single-object encoding; Schema
    Registry framing when ``settings.schema_registry_url`` is set). ``producer_config``:
    librdkafka options on top of the settings' passthrough options (idempotence and
    ``acks=all`` cannot be turned off). ``max_message_bytes``: the largest key + value sent.
    ``remember_requests``: how many recent inferences' candidate ids are kept to reject feedback
    naming an unknown candidate.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        queue_full: QueueFullPolicy = "block",
        queue_full_timeout: float = DEFAULT_QUEUE_FULL_TIMEOUT,
        delivery_timeout_ms: int | None = None,
        on_delivery_error: Callable[[FailedEvent], None] | None = None,
        codec: Codec | None = None,
        producer_config: Mapping[str, Any] | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        remember_requests: int = DEFAULT_REMEMBER_REQUESTS,
        keep_failed: int = DEFAULT_KEEP_FAILED,
    ) -> None:
        super().__init__(
            settings,
            queue_full=queue_full,
            queue_full_timeout=queue_full_timeout,
            delivery_timeout_ms=delivery_timeout_ms,
            on_delivery_error=on_delivery_error,
            codec=codec,
            producer_config=producer_config,
            max_message_bytes=max_message_bytes,
            keep_failed=keep_failed,
        )
        self._inference_topic = self.settings.inference_topic
        self._feedback_topic = self.settings.feedback_topic
        self._remember_requests = remember_requests
        self._known: OrderedDict[str, frozenset[str]] = OrderedDict()

    # ------------------------------------------------------------------ inference
    def log_inference(
        self,
        *,
        prompt: str | None = None,
        messages: Sequence[Message | Mapping[str, Any]] | None = None,
        system_prompt: str | None = None,
        candidates: Sequence[Candidate | Mapping[str, Any]],
        request_id: str | None = None,
        presentation_order: Sequence[str] | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        environment: str | None = None,
        tags: Sequence[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        timestamp_ms: int | None = None,
        parent_request_id: str | None = None,
    ) -> str:
        """Log one model call as shown to the user; returns its request id (generated if not given).

        ``parent_request_id``: the request this one regenerates (the user asked again); compile's
        implicit rules pair the parent's output against the output the user then kept.
        """
        self._check_open()
        if request_id is None:
            request_id = new_id()
        record, message = encode_checked(
            self.codec,
            INFERENCE_CONTRACT,
            {
                "event_id": new_event_id(),
                "request_id": request_id,
                "timestamp_ms": now_ms() if timestamp_ms is None else timestamp_ms,
                "system_prompt": system_prompt,
                "prompt": prompt,
                "messages": messages,
                "candidates": candidates,
                "presentation_order": () if presentation_order is None else presentation_order,
                "user_id": user_id,
                "session_id": session_id,
                "environment": environment,
                "tags": () if tags is None else tags,
                "metadata": {} if metadata is None else metadata,
                "parent_request_id": parent_request_id,
            },
        )
        self._send_encoded(self._inference_topic, request_id, message)
        self._remember(request_id, frozenset(map(_candidate_id, record["candidates"])))
        return request_id

    # ------------------------------------------------------------------ feedback
    def log_preference(
        self,
        request_id: str,
        *,
        chosen: str,
        rejected: str,
        outcome: PairwiseOutcome | str = PairwiseOutcome.PREFERRED,
        key: str = "preference",
        source: SourceLike | None = SourceType.API,
        feedback_id: str | None = None,
        comment: str | None = None,
        config: ConfigLike | None = None,
        metadata: Mapping[str, str] | None = None,
        candidates: Iterable[str] | None = None,
        timestamp_ms: int | None = None,
        experiment_id: str | None = None,
        feedback_group_id: str | None = None,
    ) -> str:
        """Log a pairwise judgment (``chosen`` beat ``rejected``, a TIE or BOTH_BAD); returns the feedback id.

        ``candidates``: the inference's candidate ids, if known, to reject unknown ids (the
        logger also checks against inferences it logged itself recently). Every feedback call also
        takes ``experiment_id`` (the comparative experiment the judgment belongs to, see
        :meth:`create_experiment`) and ``feedback_group_id`` (judgments given together).
        """
        return self._log_feedback(
            FeedbackOp.CREATE, feedback_id, request_id, candidates,
            key=key, kind=JudgmentKind.PAIRWISE, outcome=outcome_arg(outcome), chosen_id=chosen,
            rejected_id=rejected, comment=comment, config=config, source=source_arg(source),
            metadata=metadata, timestamp_ms=timestamp_ms,
            experiment_id=experiment_id, feedback_group_id=feedback_group_id,
        )  # fmt: skip

    def log_ranking(
        self,
        request_id: str,
        *,
        ranking: Sequence[Sequence[str]] | Sequence[str],
        key: str = "ranking",
        source: SourceLike | None = SourceType.API,
        feedback_id: str | None = None,
        comment: str | None = None,
        metadata: Mapping[str, str] | None = None,
        candidates: Iterable[str] | None = None,
        timestamp_ms: int | None = None,
        experiment_id: str | None = None,
        feedback_group_id: str | None = None,
    ) -> str:
        """Log a ranking, best first; ``[["a"], ["b", "c"]]`` ties b and c, ``["a", "b"]`` has no ties."""
        return self._log_feedback(
            FeedbackOp.CREATE, feedback_id, request_id, candidates,
            key=key, kind=JudgmentKind.RANKING, ranking=ranking_arg(ranking), comment=comment,
            source=source_arg(source), metadata=metadata, timestamp_ms=timestamp_ms,
            experiment_id=experiment_id, feedback_group_id=feedback_group_id,
        )  # fmt: skip

    def log_feedback(
        self,
        request_id: str,
        *,
        key: str,
        score: float | None = None,
        value: str | None = None,
        candidate: str | None = None,
        comment: str | None = None,
        correction: str | None = None,
        config: ConfigLike | None = None,
        source: SourceLike | None = SourceType.API,
        feedback_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        candidates: Iterable[str] | None = None,
        timestamp_ms: int | None = None,
        experiment_id: str | None = None,
        feedback_group_id: str | None = None,
    ) -> str:
        """Log a score or value (thumbs, rating, category, reward) on one candidate; returns its feedback id.

        ``config`` (continuous min/max, or allowed categories) is checked here and travels with
        the event.
        """
        check_score(score)
        return self._log_feedback(
            FeedbackOp.CREATE, feedback_id, request_id, candidates,
            key=key, kind=JudgmentKind.SCORE, candidate_id=candidate, score=score, value=value,
            comment=comment, correction=correction, config=config, source=source_arg(source),
            metadata=metadata, timestamp_ms=timestamp_ms,
            experiment_id=experiment_id, feedback_group_id=feedback_group_id,
        )  # fmt: skip

    def update_feedback(
        self,
        feedback_id: str,
        *,
        request_id: str,
        key: str | None = None,
        chosen: str | None = None,
        rejected: str | None = None,
        outcome: PairwiseOutcome | str | None = None,
        ranking: Sequence[Sequence[str]] | Sequence[str] | None = None,
        score: float | None = None,
        value: str | None = None,
        candidate: str | None = None,
        comment: str | None = None,
        correction: str | None = None,
        config: ConfigLike | None = None,
        source: SourceLike | None = None,
        metadata: Mapping[str, str] | None = None,
        candidates: Iterable[str] | None = None,
        timestamp_ms: int | None = None,
        experiment_id: str | None = None,
        feedback_group_id: str | None = None,
    ) -> None:
        """Change earlier feedback: a new UPDATE event with the same ``feedback_id``; None keeps a field.

        ``request_id`` is required because it is the Kafka key: the update must land in the
        partition of the feedback it changes, so the consumer sees both in order (the
        logger cannot look it up; the feedback may have been logged by another process). A
        changed judgment is restated whole: ``chosen`` and ``rejected`` (outcome defaults to
        PREFERRED), or the full ``ranking``, or ``score``/``value`` with ``candidate``.
        """
        kind = update_kind(chosen, rejected, outcome, ranking, score, value, candidate)
        if kind is JudgmentKind.PAIRWISE and outcome is None:
            outcome = PairwiseOutcome.PREFERRED
        check_score(score)
        self._log_feedback(
            FeedbackOp.UPDATE, feedback_id, request_id, candidates,
            key=key, kind=kind, outcome=None if outcome is None else outcome_arg(outcome),
            chosen_id=chosen, rejected_id=rejected,
            ranking=None if ranking is None else ranking_arg(ranking), candidate_id=candidate,
            score=score, value=value, comment=comment, correction=correction, config=config,
            source=source_arg(source), metadata=metadata, timestamp_ms=timestamp_ms,
            experiment_id=experiment_id, feedback_group_id=feedback_group_id,
        )  # fmt: skip

    def delete_feedback(
        self,
        feedback_id: str,
        *,
        request_id: str,
        source: SourceLike | None = None,
        metadata: Mapping[str, str] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Withdraw earlier feedback: a DELETE event with the same ``feedback_id``.

        ``request_id`` is required for the same reason as in :meth:`update_feedback`.
        """
        self._log_feedback(
            FeedbackOp.DELETE, feedback_id, request_id, None,
            source=source_arg(source), metadata=metadata, timestamp_ms=timestamp_ms,
        )  # fmt: skip

    # ------------------------------------------------------------------ experiments
    def create_experiment(
        self,
        name: str,
        arms: Iterable[str],
        *,
        experiment_id: str | None = None,
        description: str | None = None,
        metadata: Mapping[str, str] | None = None,
        timeout: float = experiments.DEFAULT_TIMEOUT,
    ) -> Experiment:
        """Define a comparative experiment of ``arms`` (model names, or ``name:version``) and wait
        until the broker stored it; judgments join it with ``experiment_id=experiment.experiment_id``.
        Unlike the log calls this waits on the network (an experiment is defined rarely)."""
        self._check_open()
        return experiments.create_experiment(
            self.settings, name, arms, experiment_id=experiment_id, description=description,
            metadata=metadata, timeout=timeout,
        )  # fmt: skip

    def list_experiments(self, timeout: float = experiments.DEFAULT_TIMEOUT) -> list[Experiment]:
        """Every experiment defined so far, oldest first (reads the experiments topic)."""
        return experiments.list_experiments(self.settings, timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"PreferenceLogger({state}, inference_topic={self._inference_topic!r}, "
                f"feedback_topic={self._feedback_topic!r})")  # fmt: skip

    # ------------------------------------------------------------------ implicit signals
    def log_signal(
        self,
        request_id: str,
        kind: str,
        *,
        candidate: str | None = None,
        value: float | None = None,
        text: str | None = None,
        dwell_ms: int | None = None,
        source: str | None = None,
        signal_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        candidates: Iterable[str] | None = None,
        timestamp_ms: int | None = None,
    ) -> str:
        """Log an implicit signal on a request; returns its signal id.

        ``kind``: ``regenerate``, ``copy``, ``edit`` (``text`` = the user's edit), ``dwell``
        (``dwell_ms``), ``select``, ``conversion`` (``value`` optional), ``abandon`` or ``delete``
        (:data:`prefpair.schemas.models.SIGNAL_KINDS`). Sent on the feedback topic keyed by request
        id; compile's implicit rules turn signals into pairs. A regeneration itself is the new
        request, logged with ``log_inference(..., parent_request_id=request_id)``.
        """
        self._check_open()
        event = SignalEvent.parse(
            {
                "signal_id": new_id() if signal_id is None else signal_id,
                "request_id": request_id,
                "timestamp_ms": now_ms() if timestamp_ms is None else timestamp_ms,
                "kind": kind,
                "candidate_id": candidate,
                "value": value,
                "text": text,
                "dwell_ms": dwell_ms,
                "source": source,
                "metadata": {} if metadata is None else metadata,
            }
        )
        if candidate is not None:
            if candidates is not None:
                known: frozenset[str] | None = frozenset(candidates)
            else:
                with self._lock:
                    known = self._known.get(request_id)
            if known is not None and candidate not in known:
                raise unknown_candidate("candidate_id", candidate, request_id, known)
        self._send(self._feedback_topic, SIGNAL, request_id, dict(event.__dict__))
        return event.signal_id

    # ------------------------------------------------------------------ internals
    def _log_feedback(
        self,
        op: FeedbackOp,
        feedback_id: str | None,
        request_id: str,
        candidates: Iterable[str] | None,
        *,
        key: str | None = None,
        kind: JudgmentKind | None = None,
        outcome: PairwiseOutcome | str | None = None,
        chosen_id: str | None = None,
        rejected_id: str | None = None,
        ranking: list[list[str]] | None = None,
        candidate_id: str | None = None,
        score: float | None = None,
        value: str | None = None,
        comment: str | None = None,
        correction: str | None = None,
        config: ConfigLike | None = None,
        source: FeedbackSource | Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        timestamp_ms: int | None = None,
        experiment_id: str | None = None,
        feedback_group_id: str | None = None,
    ) -> str:
        self._check_open()
        if feedback_id is None:
            feedback_id = new_id()
        record, message = encode_checked(
            self.codec,
            FEEDBACK_CONTRACT,
            {
                "event_id": new_event_id(),
                "feedback_id": feedback_id,
                "op": op,
                "request_id": request_id,
                "timestamp_ms": now_ms() if timestamp_ms is None else timestamp_ms,
                "key": key,
                "kind": kind,
                "outcome": outcome,
                "chosen_id": chosen_id,
                "rejected_id": rejected_id,
                "ranking": ranking,
                "candidate_id": candidate_id,
                "score": score,
                "value": value,
                "comment": comment,
                "correction": correction,
                "config": config,
                "source": source,
                "metadata": {} if metadata is None else metadata,
                "experiment_id": experiment_id,
                "feedback_group_id": feedback_group_id,
            },
        )
        self._check_candidates(record, candidates)
        self._send_encoded(self._feedback_topic, request_id, message)
        return feedback_id

    def _remember(self, request_id: str, candidate_ids: frozenset[str]) -> None:
        if self._remember_requests <= 0:
            return
        with self._lock:
            known = self._known
            known.pop(request_id, None)
            known[request_id] = candidate_ids
            if len(known) > self._remember_requests:
                known.popitem(last=False)

    def _check_candidates(self, record: dict[str, Any], candidates: Iterable[str] | None) -> None:
        """Reject candidate ids the inference does not have, when we know its candidates."""
        if record["op"] == FeedbackOp.DELETE:
            return
        request_id = record["request_id"]
        known: frozenset[str] | None
        if candidates is not None:
            known = frozenset(candidates)
        else:
            with self._lock:
                known = self._known.get(request_id)
        if known is None:
            return
        for field in ("chosen_id", "rejected_id", "candidate_id"):
            candidate_id = record.get(field)
            if candidate_id is not None and candidate_id not in known:
                raise unknown_candidate(field, candidate_id, request_id, known)
        for group in record.get("ranking") or ():
            for candidate_id in group:
                if candidate_id not in known:
                    raise unknown_candidate("ranking", candidate_id, request_id, known)
