"""Kafka client factories: one place that turns :class:`Settings` into librdkafka configs.

Errors from librdkafka at construction (an unknown or malformed option) become a
:class:`~prefpair.errors.ConfigError`; an unreachable cluster becomes a
:class:`~prefpair.errors.KafkaUnavailableError` within the given timeout, never a hang.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ClusterMetadata  # type: ignore[attr-defined]

from prefpair.config import Settings
from prefpair.errors import ConfigError, KafkaUnavailableError


def resolve_bootstrap(settings: Settings) -> str:
    """The configured bootstrap servers, or the address of the running local broker."""
    if settings.bootstrap_servers:
        return settings.bootstrap_servers
    from prefpair.broker import running_address  # local import: broker is optional tooling

    address = running_address(settings.broker_dir)
    if address is None:
        raise ConfigError(
            "bootstrap_servers",
            "not set and no local broker is running "
            "(set PREFPAIR_BOOTSTRAP_SERVERS or run `prefpair broker start`)",
        )
    return address


def client_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """librdkafka config: bootstrap + passthrough options + per-client overrides (dots as ``_``)."""
    config: dict[str, Any] = {"bootstrap.servers": resolve_bootstrap(settings)}
    config.update(settings.kafka)
    for key, value in overrides.items():
        config[key.replace("__", ".").replace("_", ".")] = value
    return config


class _LibrdkafkaLog:
    """Receives librdkafka's own log lines and passes them on at DEBUG.

    Without it librdkafka prints every failed connection attempt to stderr (dozens a second
    against a dead address); failures reach the user as exceptions and one-line errors
    instead, and ``--log-level DEBUG`` still shows the raw lines.
    """

    def __init__(self) -> None:
        self._logger = logging.getLogger("prefpair.librdkafka")

    def log(self, level: int, msg: str, *args: Any) -> None:
        self._logger.debug(msg, *args)


def _construct(factory: Any, config: dict[str, Any]) -> Any:
    config = dict(config)
    config.setdefault("logger", _LibrdkafkaLog())
    try:
        return factory(config)
    except KafkaException as exc:
        raise ConfigError("kafka", str(exc.args[0].str() if exc.args else exc)) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError("kafka", str(exc)) from None


KEY_PARTITIONER = "murmur2_random"
"""Every prefpair producer hashes keys like Java clients do, so inference and feedback events of one
request land in the same partition number whichever client (ours, a JVM service, Kafka Connect)
wrote them: the join relies on it. Override only all producers together."""


def create_producer(config: dict[str, Any]) -> Producer:
    config = {"partitioner": KEY_PARTITIONER, **config}
    return _construct(Producer, config)  # type: ignore[no-any-return]


def create_consumer(config: dict[str, Any]) -> Consumer:
    return _construct(Consumer, config)  # type: ignore[no-any-return]


def create_admin(config: dict[str, Any]) -> AdminClient:
    return _construct(AdminClient, config)  # type: ignore[no-any-return]


def wait_for_cluster(admin: AdminClient, bootstrap: str, timeout: float = 10.0) -> ClusterMetadata:
    """Cluster metadata, or KafkaUnavailableError after ``timeout`` seconds."""
    try:
        return admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else exc
        reason = error.str() if hasattr(error, "str") else str(error)
        raise KafkaUnavailableError(bootstrap, reason) from None
