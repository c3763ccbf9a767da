"""Synthetic traffic for the demo, the benchmarks and the tests: one model, two sinks, one builder.

* :class:`TrafficSpec` and :class:`Traffic`: the one model of serving traffic (prompts and chat
  messages, system prompts, candidates from models with planted strengths, position and length
  bias per source type, end users, a model judge, annotators, a reward model, updates, deletes,
  early and orphan feedback, poison), as contract events in production order.
* :func:`send_to_kafka`: sink (a), through the producer SDK (the demo, the consumer benchmarks).
* :func:`write_log`: sink (b), committed log segments written the way ``prefpair consume`` writes
  them, without a broker (compile and report tests and benchmarks).
* :class:`LogBuilder`: exact rows at exact offsets, for tests of edge cases.

Layering: this package sits above producers, consumers, compile, service and report and below
the command line; none of those areas imports it.
"""

from prefpair.simulate.builder import LogBuilder
from prefpair.simulate.exceptions import LogInputError, SimulationError, TrafficSpecError
from prefpair.simulate.kafka import inference_kwargs, log_feedback_event, send_to_kafka
from prefpair.simulate.log import LogWritten, write_log
from prefpair.simulate.model import SimEvent, SimulationStats, Traffic, malformed_messages
from prefpair.simulate.records import complete_feedback, complete_inference, murmur2, partition_of
from prefpair.simulate.spec import (
    APP_USER,
    DEFAULT_MODELS,
    DEFAULT_SOURCE_SHARES,
    HUMAN_ANNOTATOR,
    MODEL_JUDGE,
    REWARD_MODEL,
    SOURCE_TYPES,
    START_MS,
    TrafficSpec,
)

__all__ = [
    "APP_USER",
    "DEFAULT_MODELS",
    "DEFAULT_SOURCE_SHARES",
    "HUMAN_ANNOTATOR",
    "MODEL_JUDGE",
    "REWARD_MODEL",
    "SOURCE_TYPES",
    "START_MS",
    "LogBuilder",
    "LogInputError",
    "LogWritten",
    "SimEvent",
    "SimulationError",
    "SimulationStats",
    "Traffic",
    "TrafficSpec",
    "TrafficSpecError",
    "complete_feedback",
    "complete_inference",
    "inference_kwargs",
    "log_feedback_event",
    "malformed_messages",
    "murmur2",
    "partition_of",
    "send_to_kafka",
    "write_log",
]
