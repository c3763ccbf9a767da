"""Settings of the consumer daemon: how long feedback waits, when segments flush, memory budgets."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from prefpair.flags import Flags
from prefpair.storage import Location

DEFAULT_GROUP_ID = "prefpair-consumer"


class ConsumerConfig(BaseModel):
    """Frozen, validated knobs of :class:`~prefpair.consumers.daemon.ConsumerDaemon`.

    Defaults keep feedback-to-Parquet latency around a second on a quiet stream while
    writing reasonably large files on a busy one; ``prefpair compact`` merges the small ones.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    log_dir: Location | None = Field(
        default=None,
        description="Where the Parquet log is written: a folder, or s3://bucket/prefix (S3 settings: --s3-* "
        "or the AWS variables); unset means <home>/log.",
    )
    group_id: str = Field(default=DEFAULT_GROUP_ID, min_length=1, description="Kafka consumer group.")
    instance_id: str | None = Field(
        default=None,
        min_length=1,
        description="Static group membership (group.instance.id): a restarted instance with the same id "
        "takes its partitions back at once instead of after the session timeout.",
    )
    grace_ms: int = Field(
        default=5 * 60 * 1000,
        ge=0,
        description="How long feedback waits for its inference event before it is an orphan, in event time "
        "(record timestamps); the wall clock counts only once a partition is read to its end on both topics.",
    )
    max_future_ms: int = Field(
        default=5 * 60 * 1000,
        ge=0,
        description="A record stamped more than this ahead of the daemon's clock joins as usual but does not "
        "move stream time, so one producer's wrong clock cannot make everyone's on-time feedback late.",
    )
    max_idle_ms: int = Field(
        default=2_000,
        ge=0,
        description="How long a partition waits for a fetch from one topic before it joins the other's records "
        "without knowing the next timestamp (Kafka Streams' max.task.idle.ms).",
    )
    max_queued_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Fetched bytes queued per topic-partition before fetching it pauses, so one topic cannot "
        "run far ahead of the other.",
    )
    flush_interval_ms: int = Field(
        default=500, ge=10, description="A partition with buffered rows reaches disk at least this often."
    )
    backlog_flush_interval_ms: int = Field(
        default=5_000,
        ge=10,
        description="While a partition is behind (not read to its end), its segments are cut at most this often "
        "instead: fewer, bigger files and fsyncs when catching up on a backlog.",
    )
    flush_rows: int = Field(default=50_000, ge=1, description="Rows buffered per partition before a flush.")
    flush_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Approximate memory of the rows buffered per partition (about 4x their Avro size) before a flush.",
    )
    hot_state_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=0,
        description="Budget of inference events kept in memory for the join; older ones are looked up on disk.",
    )
    dedup_ids: int = Field(
        default=2_000_000,
        ge=0,
        description="Event ids remembered per partition to drop producer-side duplicates.",
    )
    compression: Literal["snappy", "zstd", "lz4", "gzip", "none"] = Field(
        default="snappy", description="Parquet compression of log files."
    )
    batch_size: int = Field(default=1000, ge=1, le=100_000, description="Messages fetched per poll.")
    progress_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds between progress lines.",
        json_schema_extra={"flag": "--progress-interval"},
    )
    metrics_path: str | None = Field(
        default=None,
        description="Write metrics here (JSON, and Prometheus text beside it as .prom).",
        json_schema_extra={"flag": "--metrics-file"},
    )
    session_timeout_ms: int = Field(
        default=10_000,
        ge=1_000,
        description="Kafka session timeout: how soon the group notices a dead member and hands its partitions on.",
    )
    assignment_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="With --until-caught-up: seconds after which to give up if no partition is assigned.",
        json_schema_extra={"flag": "--assignment-timeout"},
    )


CONSUMER_FLAGS = Flags(ConsumerConfig, env_prefix="PREFPAIR_CONSUMER_")
"""``--grace-ms``, ``PREFPAIR_CONSUMER_GRACE_MS``, ...: the flags and variables of :class:`ConsumerConfig`."""
