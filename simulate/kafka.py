"""Sink (a): simulated traffic into Kafka through the producer SDK, as serving code would log it.

Every inference and feedback event becomes the :class:`~prefpair.producers.PreferenceLogger`
call serving code would make (``log_inference``, ``log_preference``, ``log_ranking``,
``log_feedback``, ``update_feedback``, ``delete_feedback``) with the event's own request id,
feedback id and event time; the logger assigns event ids. Poison goes out as raw bytes through
``send_raw``, since the SDK refuses to send it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prefpair.producers import PreferenceLogger
from prefpair.simulate.model import FEEDBACK_EVENT, INFERENCE_EVENT, POISON, SimEvent, SimulationStats

SendRaw = Callable[[bytes, bytes], None]
"""``send_raw(key, value)`` puts bytes on the feedback topic as they are."""

_INFERENCE_ARGS = ("request_id", "prompt", "messages", "system_prompt", "candidates", "presentation_order", "user_id",
                   "session_id", "environment", "tags", "metadata")  # fmt: skip


def inference_kwargs(record: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments of :meth:`PreferenceLogger.log_inference` for an inference event (its time included)."""
    kwargs = {name: record[name] for name in _INFERENCE_ARGS if name in record}
    kwargs["timestamp_ms"] = record["timestamp_ms"]
    return kwargs


def log_feedback_event(logger: PreferenceLogger, record: Mapping[str, Any]) -> None:
    """Log one feedback event through the SDK call that writes exactly that event."""
    r = record
    common = {"timestamp_ms": r["timestamp_ms"], "metadata": r.get("metadata")}
    if r["op"] == "DELETE":
        logger.delete_feedback(r["feedback_id"], request_id=r["request_id"], source=r.get("source"), **common)
        return
    judged = {"source": r.get("source"), "comment": r.get("comment"), **common}
    if r["op"] == "UPDATE":
        logger.update_feedback(
            r["feedback_id"], request_id=r["request_id"], key=r.get("key"), chosen=r.get("chosen_id"),
            rejected=r.get("rejected_id"), outcome=r.get("outcome"), ranking=r.get("ranking"), score=r.get("score"),
            value=r.get("value"), candidate=r.get("candidate_id"), correction=r.get("correction"),
            config=r.get("config"), **judged,
        )  # fmt: skip
    elif r["kind"] == "PAIRWISE":
        logger.log_preference(
            r["request_id"], chosen=r["chosen_id"], rejected=r["rejected_id"], outcome=r["outcome"], key=r["key"],
            feedback_id=r["feedback_id"], config=r.get("config"), **judged,
        )  # fmt: skip
    elif r["kind"] == "RANKING":
        logger.log_ranking(r["request_id"], ranking=r["ranking"], key=r["key"], feedback_id=r["feedback_id"], **judged)
    else:
        logger.log_feedback(
            r["request_id"], key=r["key"], score=r.get("score"), value=r.get("value"), candidate=r.get("candidate_id"),
            correction=r.get("correction"), config=r.get("config"), feedback_id=r["feedback_id"], **judged,
        )  # fmt: skip


def send_to_kafka(
    traffic: Iterable[SimEvent],
    logger: PreferenceLogger,
    *,
    send_raw: SendRaw | None = None,
    progress: Callable[[int], None] | None = None,
) -> SimulationStats:
    """Send ``traffic`` in its order; returns what was sent.

    Poison is sent only when ``send_raw`` is given (else skipped and not counted), after the logger
    has flushed what came before it (the model sends poison last). ``progress(1)``
    is called once per request: at its inference, or at the feedback of a request whose inference
    is never logged.
    """
    stats = SimulationStats()
    unflushed = False
    for event in traffic:
        if event.kind == POISON:
            if send_raw is None:
                continue
            if unflushed:  # another producer: what the logger sent before must be in Kafka first
                logger.flush()
                unflushed = False
            send_raw(event.key.encode(), event.value)
        elif event.kind == INFERENCE_EVENT:
            assert event.record is not None
            logger.log_inference(**inference_kwargs(event.record))
            unflushed = True
        elif event.kind == FEEDBACK_EVENT:
            assert event.record is not None
            log_feedback_event(logger, event.record)
            unflushed = True
        stats.count(event)
        if progress is not None and (event.kind == INFERENCE_EVENT or event.orphan):
            progress(1)
    return stats
