"""The topics prefpair needs, the joined pair co-partitioned: ``prefpair topics create|describe``.

The consumer joins an inference event with its feedback by request id, reading partition
*p* of both topics together, so both topics must have the same partition count (and the
producer keys both by request id). :func:`create_topics` creates what is missing, accepts
what already exists when it is co-partitioned, and refuses otherwise, naming both topics
and their counts. The dead-letter topic holds messages the consumer could not decode. Beside
them, ``create`` also makes the two small event topics (:mod:`prefpair.event_topics`): experiment
definitions (compacted) and presigned token events (kept at least as long as a token lives), one
partition each, so nothing has to be created on first use.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
    AdminClient,
    ClusterMetadata,
    ConfigResource,
    NewTopic,
)
from pydantic import BaseModel, ConfigDict, Field

from prefpair.config import SETTINGS_FLAGS, TOPIC_LAYOUT, Settings
from prefpair.errors import ConfigError, PrefpairError
from prefpair.event_topics import tokens_retention_ms
from prefpair.flags import Flags
from prefpair.kafka import client_config, create_admin, resolve_bootstrap, wait_for_cluster

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0  # a cluster that gives no metadata in 10 s is down or misconfigured
EXIT_NOT_READY = 1


class TopicError(PrefpairError):
    """The cluster refused or failed to create or describe a topic."""


@dataclass(frozen=True)
class TopicsReport:
    """Partition counts of the topics after :func:`create_topics`, and which were created."""

    inference_topic: str
    feedback_topic: str
    dead_letter_topic: str
    partitions: dict[str, int]
    created: tuple[str, ...] = field(default=())

    @property
    def co_partitions(self) -> int:
        """The partition count shared by the inference and feedback topics."""
        return self.partitions[self.inference_topic]


@dataclass(frozen=True)
class TopicInfo:
    """One topic as ``prefpair topics describe`` shows it."""

    name: str
    partitions: int
    replication_factor: int
    retention_ms: str | None


def create_topics(settings: Settings, *, timeout: float = DEFAULT_TIMEOUT) -> TopicsReport:
    """Create the inference, feedback and dead-letter topics, and the experiments and tokens topics,
    unless they exist; verify co-partitioning.

    New topics get ``settings.partitions``, ``replication_factor`` and ``retention_ms``; if only one
    of the joined pair exists, the other is created with its partition count. Raises ConfigError
    when the existing pair is not co-partitioned, KafkaUnavailableError when nobody answers.
    """
    inference, feedback, dead = settings.inference_topic, settings.feedback_topic, settings.dead_letter_topic
    events = (settings.experiments_topic, settings.tokens_topic)
    if len({inference, feedback, dead, *events}) < 5:
        raise ConfigError(
            "topics",
            f"inference ({inference}), feedback ({feedback}), dead-letter ({dead}), experiments ({events[0]}) "
            f"and tokens ({events[1]}) topics must differ",
        )
    bootstrap = resolve_bootstrap(settings)
    admin = create_admin(client_config(settings))
    existing = _partition_counts(wait_for_cluster(admin, bootstrap, min(timeout, CONNECT_TIMEOUT)))
    _check_co_partitioned(existing, inference, feedback)

    pair = existing.get(inference) or existing.get(feedback)
    if pair is not None and pair != settings.partitions:
        if inference in existing and feedback in existing:
            log.warning(
                "topics %s and %s already exist with %d partitions (not %d); keeping them",
                inference, feedback, pair, settings.partitions,
            )  # fmt: skip
        else:
            log.info("creating the missing partner topic with %d partitions, as the existing one has", pair)
    counts = {inference: pair or settings.partitions, feedback: pair or settings.partitions}
    counts[dead] = existing.get(dead, settings.partitions)
    counts.update(dict.fromkeys(events, 1))
    configs = _configs(settings)
    names = (inference, feedback, dead, *events)
    missing = [name for name in names if name not in existing]
    created = _create(admin, settings, {name: (counts[name], configs[name]) for name in missing}, timeout)

    final = wait_for_leaders(admin, bootstrap, names, timeout)
    _check_co_partitioned(final, inference, feedback)  # a concurrent creator may have raced us
    for name in created:
        log.info("created topic %s with %d partitions", name, final[name])
    return TopicsReport(inference, feedback, dead, {n: final[n] for n in names}, created)


def ensure_topics(settings: Settings, *, timeout: float = DEFAULT_TIMEOUT) -> int:
    """Make sure the topics exist and are co-partitioned; return their shared partition count."""
    return create_topics(settings, timeout=timeout).co_partitions


def describe_topics(settings: Settings, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, TopicInfo | None]:
    """The three topics as the cluster has them (None for a missing one)."""
    bootstrap = resolve_bootstrap(settings)
    admin = create_admin(client_config(settings))
    metadata = wait_for_cluster(admin, bootstrap, min(timeout, CONNECT_TIMEOUT))
    names = (settings.inference_topic, settings.feedback_topic, settings.dead_letter_topic)
    present = [name for name in names if name in metadata.topics and metadata.topics[name].error is None]
    retention: dict[str, str | None] = {}
    if present:
        futures = admin.describe_configs(
            [ConfigResource(ConfigResource.Type.TOPIC, name) for name in present], request_timeout=timeout
        )
        for resource, future in futures.items():
            try:
                entry = future.result().get("retention.ms")
            except KafkaException:
                entry = None
            retention[resource.name] = entry.value if entry is not None else None
    result: dict[str, TopicInfo | None] = {}
    for name in names:
        if name not in present:
            result[name] = None
            continue
        partitions = metadata.topics[name].partitions
        replicas = max((len(p.replicas) for p in partitions.values()), default=0)
        result[name] = TopicInfo(name, len(partitions), replicas, retention.get(name))
    return result


# ---------------------------------------------------------------------------- internals
def _partition_counts(metadata: ClusterMetadata) -> dict[str, int]:
    return {name: len(topic.partitions) for name, topic in metadata.topics.items() if topic.error is None}


def _check_co_partitioned(counts: dict[str, int], inference: str, feedback: str) -> None:
    if inference in counts and feedback in counts and counts[inference] != counts[feedback]:
        raise ConfigError(
            "partitions",
            f"topics {inference} ({counts[inference]} partitions) and {feedback} "
            f"({counts[feedback]} partitions) are not co-partitioned; the join needs the same "
            "partition count on both (recreate one, or use other topic names)",
        )


def _configs(settings: Settings) -> dict[str, dict[str, str]]:
    """The topic config each topic is created with (the event topics' as :mod:`prefpair.event_topics` has them)."""
    data = {"retention.ms": str(settings.retention_ms)}
    return {
        settings.inference_topic: data,
        settings.feedback_topic: data,
        settings.dead_letter_topic: data,
        settings.experiments_topic: {"cleanup.policy": "compact"},
        settings.tokens_topic: {"retention.ms": str(tokens_retention_ms(settings))},
    }


def _create(
    admin: AdminClient, settings: Settings, wanted: dict[str, tuple[int, dict[str, str]]], timeout: float
) -> tuple[str, ...]:
    if not wanted:
        return ()
    new = [
        NewTopic(name, num_partitions=count, replication_factor=settings.replication_factor, config=config)
        for name, (count, config) in wanted.items()
    ]
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    created: list[str] = []
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # created concurrently; the co-partitioning check that follows still applies
            raise _topic_error(name, error, settings) from None
        created.append(name)
    return tuple(created)


def _topic_error(name: str, error: KafkaError, settings: Settings) -> PrefpairError:
    code, reason = error.code(), error.str()
    if code == KafkaError.INVALID_REPLICATION_FACTOR:
        return ConfigError("replication_factor", f"cannot create {name} with {settings.replication_factor} "
                           f"replicas: {reason}")  # fmt: skip
    if code == KafkaError.INVALID_PARTITIONS:
        return ConfigError("partitions", f"cannot create {name}: {reason}")
    if code in (KafkaError.INVALID_CONFIG, KafkaError.POLICY_VIOLATION):
        return ConfigError("retention_ms", f"cannot create {name}: {reason}")
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        return TopicError(f"not authorized to create topic {name}: {reason}")
    return TopicError(f"cannot create topic {name}: {reason}")


def wait_for_leaders(
    admin: AdminClient, bootstrap: str, names: tuple[str, ...], timeout: float
) -> dict[str, int]:
    """Partition counts once every partition of ``names`` has a leader, so producers can write at once."""
    deadline = time.monotonic() + timeout
    while True:
        metadata = wait_for_cluster(admin, bootstrap, max(1.0, deadline - time.monotonic()))
        topics = metadata.topics
        ready = all(
            name in topics
            and topics[name].error is None
            and topics[name].partitions
            and all(p.leader >= 0 and p.error is None for p in topics[name].partitions.values())
            for name in names
        )
        if ready:
            return _partition_counts(metadata)
        if time.monotonic() > deadline:
            waiting = [name for name in names if name not in topics]
            raise TopicError(
                f"topics {', '.join(waiting) or ', '.join(names)} have no leader after {timeout:.0f} s"
            )
        time.sleep(0.2)


# ---------------------------------------------------------------------------- command line
class TopicsCommand(BaseModel):
    """Options of ``prefpair topics create|describe`` besides the settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0, description="Seconds to wait for the cluster.")


TOPICS_FLAGS = Flags(TopicsCommand, env_prefix="PREFPAIR_TOPICS_")


def register(subparsers: Any) -> None:
    """Add ``prefpair topics create|describe``."""
    parser = subparsers.add_parser(
        "topics",
        help="create or describe the co-partitioned inference/feedback topics, the dead-letter topic and the "
        "experiments and tokens topics",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    actions = parser.add_subparsers(dest="topics_command", metavar="ACTION", required=True)

    create = actions.add_parser(
        "create",
        help="create the topics unless they exist (idempotent); refuse if not co-partitioned",
        description="Create the inference and feedback topics with the same partition count, the "
        "dead-letter topic, and the experiments and tokens topics (one partition each). Existing "
        "co-partitioned topics are kept as they are.",
    )
    SETTINGS_FLAGS.add_arguments(create, only=TOPIC_LAYOUT)
    TOPICS_FLAGS.add_arguments(create)
    create.set_defaults(func=_create_command)

    describe = actions.add_parser(
        "describe", help="show partitions, replicas and retention; exit 1 if a topic is missing"
    )
    TOPICS_FLAGS.add_arguments(describe)
    describe.set_defaults(func=_describe_command)


def _create_command(args: argparse.Namespace, settings: Settings) -> int:
    report = create_topics(settings, timeout=TOPICS_FLAGS.load(args).timeout)
    for name, count in report.partitions.items():
        note = "created" if name in report.created else "exists"
        print(f"{name}\t{count} partitions\t{note}")
    return 0


def _describe_command(args: argparse.Namespace, settings: Settings) -> int:
    topics = describe_topics(settings, timeout=TOPICS_FLAGS.load(args).timeout)
    for name, info in topics.items():
        if info is None:
            print(f"{name}\tmissing")
        else:
            print(
                f"{name}\t{info.partitions} partitions\treplication {info.replication_factor}\t"
                f"retention.ms {info.retention_ms}"
            )
    counts = {name: info.partitions for name, info in topics.items() if info is not None}
    try:
        _check_co_partitioned(counts, settings.inference_topic, settings.feedback_topic)
    except ConfigError as exc:
        print(f"not co-partitioned: {exc.reason}")
        return EXIT_NOT_READY
    return 0 if len(counts) == len(topics) else EXIT_NOT_READY
