"""One typed, validated settings object: flags > ``PREFPAIR_*`` environment > defaults.

Every default lives here once (topic names, partitions, where data goes). Any librdkafka
option passes through unchanged in :attr:`Settings.kafka`, so SASL/SSL clusters need no
code change: ``PREFPAIR_KAFKA_SASL_MECHANISMS=PLAIN`` becomes ``sasl.mechanisms=PLAIN``,
``--kafka-option security.protocol=SASL_SSL`` does the same from the command line.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from prefpair.errors import ConfigError
from prefpair.flags import Flags
from prefpair.storage import S3Options

ENV_PREFIX = "PREFPAIR_"
KAFKA_ENV_PREFIX = "PREFPAIR_KAFKA_"
KAFKA_CONFIG_FILE_ENV = KAFKA_ENV_PREFIX + "CONFIG_FILE"
SECRET_MARKERS = ("password", "secret", "token", "key.pem", "private", "sasl.jaas")

DEFAULT_INFERENCE_TOPIC = "prefpair.inference"
DEFAULT_FEEDBACK_TOPIC = "prefpair.feedback"
DEFAULT_DEAD_LETTER_TOPIC = "prefpair.dead-letters"
DEFAULT_EXPERIMENTS_TOPIC = "prefpair.experiments"
DEFAULT_TOKENS_TOPIC = "prefpair.tokens"
DEFAULT_ERASURE_TOPIC = "prefpair.erasures"


class Settings(BaseModel):
    """Connection, topic and storage settings shared by every prefpair command."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str | None = Field(
        default=None,
        description="Kafka bootstrap servers; unset means the local broker of `prefpair broker start`.",
    )
    home: Path = Field(
        default=Path(".prefpair"),
        description="Where the local broker, the Parquet log and compiled datasets live by default.",
    )
    inference_topic: str = Field(
        default=DEFAULT_INFERENCE_TOPIC, min_length=1, description="Topic of the inference events."
    )
    feedback_topic: str = Field(
        default=DEFAULT_FEEDBACK_TOPIC, min_length=1, description="Topic of the feedback events."
    )
    dead_letter_topic: str = Field(
        default=DEFAULT_DEAD_LETTER_TOPIC,
        min_length=1,
        description="Topic of the messages the consumer could not decode or validate.",
    )
    experiments_topic: str = Field(
        default=DEFAULT_EXPERIMENTS_TOPIC,
        min_length=1,
        description="Topic of the comparative experiments' definitions (JSON, keyed by experiment id, compacted).",
    )
    tokens_topic: str = Field(
        default=DEFAULT_TOKENS_TOPIC,
        min_length=1,
        description="Topic of presigned token events (issued, used, revoked) that every service instance follows.",
    )
    erasure_topic: str = Field(
        default=DEFAULT_ERASURE_TOPIC,
        min_length=1,
        description="Topic of erasure requests (`prefpair erase`): one partition, kept for ever (the audit trail).",
    )
    partitions: int = Field(default=4, ge=1, le=10_000, description="Partitions of each new topic.")
    replication_factor: int = Field(default=1, ge=1, le=32, description="Replicas of each partition of a new topic.")
    retention_ms: int = Field(
        default=7 * 24 * 3600 * 1000, ge=-1, description="Retention of each new topic in ms; -1 keeps events for ever."
    )
    schema_registry_url: str | None = Field(
        default=None,
        description="Use Confluent Schema Registry framing instead of Avro single-object encoding.",
    )
    kafka: Mapping[str, str] = Field(
        default_factory=dict,
        description="A librdkafka option passed through unchanged; also PREFPAIR_KAFKA_<KEY> "
        "(_ for .) and PREFPAIR_KAFKA_CONFIG_FILE (a .properties file).",
        json_schema_extra={"flag": "--kafka-option", "env": None},
    )

    s3_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint of S3-compatible storage for s3:// locations; unset: AWS_ENDPOINT_URL_S3, "
        "AWS_ENDPOINT_URL, else AWS.",
    )
    s3_region: str | None = Field(default=None, description="Region of s3:// locations; unset: AWS_REGION.")
    s3_access_key_id: str | None = Field(
        default=None,
        description="Access key id for s3:// locations (with the secret); unset: AWS_ACCESS_KEY_ID or ~/.aws.",
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None,
        description="Secret access key for s3:// locations (environment only); unset: AWS_SECRET_ACCESS_KEY or ~/.aws.",
        json_schema_extra={"flag": None},
    )

    @field_validator("kafka")
    @classmethod
    def _no_bootstrap_in_passthrough(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        if "bootstrap.servers" in value:
            raise ValueError("set bootstrap.servers through bootstrap_servers, not as a passthrough option")
        return dict(value)

    @property
    def log_dir(self) -> Path:
        """The append-only Parquet log written by ``prefpair consume``."""
        return self.home / "log"

    @property
    def broker_dir(self) -> Path:
        """Data directory of the local broker (survives stop/start)."""
        return self.home / "broker"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    def s3_options(self) -> S3Options:
        """How ``s3://`` locations are reached (:mod:`prefpair.storage`); unset fields: the AWS chain.

        The key id and the secret come together (ConfigError naming the missing one otherwise).
        """
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            missing = "PREFPAIR_S3_SECRET_ACCESS_KEY" if self.s3_secret_access_key is None else "--s3-access-key-id"
            raise ConfigError(
                "s3_access_key_id" if self.s3_secret_access_key is None else "s3_secret_access_key",
                f"needs {missing} too (or neither, for the AWS variables)",
            )
        return S3Options(
            endpoint_url=self.s3_endpoint_url,
            region=self.s3_region,
            access_key_id=self.s3_access_key_id,
            secret_access_key=self.s3_secret_access_key,
        )

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls, flags: argparse.Namespace | Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Merge flags (highest), ``PREFPAIR_*`` environment, then defaults; raise ConfigError.

        ``flags`` are parsed arguments, or a mapping of field -> value (None: not given).
        librdkafka options merge, flags over ``PREFPAIR_KAFKA_<KEY>`` over ``PREFPAIR_KAFKA_CONFIG_FILE``.
        """
        env = os.environ if environ is None else environ
        values, sources = SETTINGS_FLAGS.gather(flags, env)
        kafka = kafka_environment(env)
        if kafka and "kafka" not in sources:
            sources["kafka"] = KAFKA_ENV_PREFIX + "*"
        kafka.update(values.get("kafka") or {})
        values["kafka"] = kafka
        return SETTINGS_FLAGS.validate(values, sources)

    def redacted(self) -> dict[str, Any]:
        """A loggable view: secrets in passthrough options are masked."""
        data = self.model_dump(mode="json")
        data["kafka"] = {k: ("***" if is_secret(k) else v) for k, v in self.kafka.items()}
        if self.schema_registry_url:
            data["schema_registry_url"] = redact_url(self.schema_registry_url)
        if self.s3_endpoint_url:
            data["s3_endpoint_url"] = redact_url(self.s3_endpoint_url)
        return data

    def __repr__(self) -> str:  # never print secrets by accident
        return f"Settings({json.dumps(self.redacted(), sort_keys=True)})"

    __str__ = __repr__


SETTINGS_FLAGS = Flags(Settings, env_prefix=ENV_PREFIX)
"""Flags and ``PREFPAIR_<FIELD>`` variables of :class:`Settings` (``--home``, ``PREFPAIR_HOME``, ...)."""

TOPIC_LAYOUT = ("partitions", "replication_factor", "retention_ms")
"""Settings that only ``prefpair topics create`` takes as flags (every command reads their variables)."""


def is_secret(option: str) -> bool:
    """Whether a librdkafka option name holds a credential."""
    lowered = option.lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def redact_url(url: str) -> str:
    """``https://user:secret@host`` as ``https://***@host``: credentials in a URL are secrets too."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def kafka_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """librdkafka options from ``PREFPAIR_KAFKA_<KEY>`` (``_`` for ``.``) over ``PREFPAIR_KAFKA_CONFIG_FILE``."""
    options: dict[str, str] = {}
    config_file = environ.get(KAFKA_CONFIG_FILE_ENV)
    if config_file:
        options.update(read_properties(Path(config_file)))
    for name, raw in environ.items():
        if name.startswith(KAFKA_ENV_PREFIX) and name != KAFKA_CONFIG_FILE_ENV:
            options[name[len(KAFKA_ENV_PREFIX) :].lower().replace("_", ".")] = raw
    return options


def read_properties(path: Path) -> dict[str, str]:
    """Read a Java-style ``.properties`` file of librdkafka options."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("kafka", f"cannot read {path}: {exc.strerror}") from None
    options: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, _, value = line.partition("=")
        options[key.strip()] = value.strip()
    return options
