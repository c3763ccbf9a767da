"""Creating and listing comparative experiments from serving code (the SDK's side).

A definition is one acknowledged JSON event on ``settings.experiments_topic`` keyed by the
experiment id (:mod:`prefpair.schemas.experiments`); judgments join it by ``experiment_id``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout

from prefpair.config import Settings
from prefpair.event_topics import EventTopicError, TopicWriter, ensure_topic, read_topic
from prefpair.schemas.experiments import Experiment, latest_definitions

DEFAULT_TIMEOUT = 30.0


def publish_experiment(settings: Settings, experiment: Experiment, timeout: float = DEFAULT_TIMEOUT) -> Experiment:
    """Store ``experiment`` on the experiments topic (created when missing); return once acknowledged."""
    topic = settings.experiments_topic
    ensure_topic(settings, topic, compact=True, timeout=timeout)
    writer = TopicWriter(settings, topic)
    try:
        writer.send(experiment.experiment_id, experiment.to_bytes()).result(timeout)
    except FutureTimeout:
        raise EventTopicError(topic, f"no acknowledgement within {timeout:g}s") from None
    finally:
        writer.close()
    return experiment


def create_experiment(
    settings: Settings,
    name: str,
    arms: Iterable[str],
    *,
    experiment_id: str | None = None,
    description: str | None = None,
    metadata: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Experiment:
    """Define an experiment comparing ``arms`` (model names, or ``name:version``); ValidationError
    naming the field on bad input, before anything is sent."""
    experiment = Experiment.new(name, arms, experiment_id=experiment_id, description=description, metadata=metadata)
    return publish_experiment(settings, experiment, timeout)


def list_experiments(settings: Settings, timeout: float = DEFAULT_TIMEOUT) -> list[Experiment]:
    """Every experiment defined so far, oldest first (none when the topic does not exist yet)."""
    return latest_definitions(r.value for r in read_topic(settings, settings.experiments_topic, timeout))
