"""A local single-node Apache Kafka 4.4.0 (KRaft) for development, the demo and the tests.

Jars come from Maven Central (``prefpair broker fetch``); ``prefpair broker start`` runs
the broker from a data directory (default ``.prefpair/broker``) and records its address,
which every other command finds through :func:`running_address` when no bootstrap servers
are configured. Docker is not needed.
"""

from prefpair.broker.exceptions import (
    BrokerError,
    BrokerStartError,
    FetchError,
    JavaNotFoundError,
    PortInUseError,
)
from prefpair.broker.manager import (
    KAFKA_VERSION,
    BrokerStatus,
    LocalBroker,
    default_cache_dir,
    fetch,
    find_java,
    is_fetched,
    kafka_home,
    running_address,
)

__all__ = [
    "KAFKA_VERSION",
    "BrokerError",
    "BrokerStartError",
    "BrokerStatus",
    "FetchError",
    "JavaNotFoundError",
    "LocalBroker",
    "PortInUseError",
    "default_cache_dir",
    "fetch",
    "find_java",
    "is_fetched",
    "kafka_home",
    "running_address",
]
