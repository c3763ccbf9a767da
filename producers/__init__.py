"""The producer SDK: :class:`PreferenceLogger` logs inference and feedback events from serving code.

Events are validated and encoded in the caller, then delivered by librdkafka with an
idempotent producer, keyed by request id. ``logger`` holds the public calls, ``events`` turns
their arguments into Avro records, ``records`` checks and encodes those (plain arguments without
building the models), ``delivery`` sends them and reports their fate.
Synthetic traffic for the demo and the benchmarks lives in :mod:`prefpair.simulate`, above this package.
"""

from prefpair.producers.delivery import (
    DEFAULT_DELIVERY_TIMEOUT_MS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DeliveryReport,
    LoggerStats,
)
from prefpair.producers.erasure import request_erasure
from prefpair.producers.exceptions import (
    DeliveryError,
    FailedEvent,
    LoggerClosedError,
    ProducerError,
    QueueFullError,
)
from prefpair.producers.logger import PreferenceLogger

__all__ = [
    "DEFAULT_DELIVERY_TIMEOUT_MS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DeliveryError",
    "DeliveryReport",
    "FailedEvent",
    "LoggerClosedError",
    "LoggerStats",
    "PreferenceLogger",
    "ProducerError",
    "QueueFullError",
    "request_erasure",
]
