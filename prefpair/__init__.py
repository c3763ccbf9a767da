"""prefpair: production LLM traffic to preference datasets, on Kafka.

Subpackages, one concern each:

- :mod:`prefpair.schemas`   the wire contract (Avro schemas, pydantic models, framing, Parquet log layout)
- :mod:`prefpair.producers` the SDK serving code uses to log inference and feedback events
- :mod:`prefpair.consumers` the daemon that joins events into the exactly-once Parquet log
- :mod:`prefpair.compile`   the job that turns the log into chosen/rejected JSONL datasets
- :mod:`prefpair.broker`    a local single-node Apache Kafka (KRaft) for development and tests
- :mod:`prefpair.cli`       the ``prefpair`` command (the top floor: nothing imports it)

The modules of this folder (settings, flags, Kafka clients, storage, errors, topics, the broker) are the
ground floor: they import none of the packages above them (``tests/test_layers.py``).
"""

from prefpair.errors import ConfigError, PrefpairError

__version__ = "0.1.0"

__all__ = ["ConfigError", "PrefpairError", "__version__"]
