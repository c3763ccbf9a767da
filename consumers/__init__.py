"""The consumer daemon: joins feedback to inference on request id into the append-only Parquet log.

``prefpair consume`` runs :class:`ConsumerDaemon`; ``prefpair compact`` merges small segments.
"""

from prefpair.consumers.compaction import CompactionReport, compact
from prefpair.consumers.config import ConsumerConfig
from prefpair.consumers.daemon import ConsumerDaemon
from prefpair.consumers.exceptions import (
    ConsumerError,
    CorruptStateError,
    DeadLetterError,
    SegmentCommitError,
)
from prefpair.consumers.metrics import RunStats

__all__ = [
    "CompactionReport",
    "ConsumerConfig",
    "ConsumerDaemon",
    "ConsumerError",
    "CorruptStateError",
    "DeadLetterError",
    "RunStats",
    "SegmentCommitError",
    "compact",
]
