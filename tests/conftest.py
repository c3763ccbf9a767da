"""Shared fixtures: one real Kafka per test session, fresh topics per test, the CLI in a subprocess.

``kafka_bootstrap`` picks the cluster, first match wins:

1. ``PREFPAIR_BOOTSTRAP_SERVERS`` names one: use it as is.
2. A Docker engine answers (and ``PREFPAIR_TEST_KAFKA`` is not ``local``): testcontainers' Kafka (KRaft).
3. Otherwise the project's own local broker (:class:`prefpair.broker.LocalBroker`, a real Kafka
   4.4.0 JVM) in a temporary data dir, with jars from the shared cache; stopped at session end.

Nothing is mocked and nothing is skipped: without Java and Maven (and no Docker, no cluster)
the session fails loudly, naming what is missing.

``s3_endpoint`` is a real S3 server the same way: ``PREFPAIR_TEST_S3_ENDPOINT`` (with
``PREFPAIR_TEST_S3_ACCESS_KEY_ID`` / ``..._SECRET_ACCESS_KEY``) if set, else SeaweedFS started by the
session (:mod:`prefpair.s3server`, through :mod:`s3_support`), with real signature checks; it fails
loudly when it cannot start.
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from s3_support import S3Endpoint, configured_endpoint, session_server

from prefpair.broker import LocalBroker, default_cache_dir
from prefpair.config import Settings
from prefpair.storage import S3Storage
from prefpair.topics import create_topics

BOOTSTRAP_ENV = "PREFPAIR_BOOTSTRAP_SERVERS"
BACKEND_ENV = "PREFPAIR_TEST_KAFKA"  # auto (default), local, docker
SESSION_BROKER_START_TIMEOUT = 90.0

log = logging.getLogger("tests.conftest")

# No test asks the cloud instance metadata service for credentials (botocore's last resort).
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


def _docker_answers() -> bool:
    """Whether a Docker engine answers within a few seconds (any failure means no)."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@pytest.fixture(scope="session")
def broker_cache_dir() -> Path:
    """Where the local broker's jars are cached; shared by every broker a test starts."""
    return default_cache_dir()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory, broker_cache_dir: Path) -> Iterator[str]:
    """Bootstrap address of the session's Kafka cluster (see the module docstring)."""
    configured = os.environ.get(BOOTSTRAP_ENV)
    if configured:
        yield configured
        return
    backend = os.environ.get(BACKEND_ENV, "auto")
    if backend == "docker" or (backend == "auto" and _docker_answers()):
        try:
            from testcontainers.community.kafka import KafkaContainer
        except ImportError:  # testcontainers < 4.10 keeps the module at its old place
            from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    broker = LocalBroker(tmp_path_factory.mktemp("session-broker"), cache_dir=broker_cache_dir)
    try:
        yield broker.start(timeout=SESSION_BROKER_START_TIMEOUT)
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """The session's S3 server (see the module docstring); its bucket exists."""
    configured = configured_endpoint()
    if configured is not None:
        fs = configured.options.filesystem()
        if not fs.exists(configured.bucket):
            fs.mkdir(configured.bucket)
        yield configured
        return
    server = session_server(tmp_path_factory.mktemp("session-s3"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def s3_root(s3_endpoint: S3Endpoint) -> S3Storage:
    """A prefix of the session's bucket that no other test uses: ``s3://<bucket>/test-<uuid>``."""
    return s3_endpoint.root(f"test-{uuid.uuid4().hex[:12]}")


def unique_topics(prefix: str = "test") -> dict[str, str]:
    """Three topic names no other test (or earlier run on the same cluster) uses."""
    suffix = uuid.uuid4().hex[:12]
    return {
        "inference_topic": f"{prefix}.{suffix}.inference",
        "feedback_topic": f"{prefix}.{suffix}.feedback",
        "dead_letter_topic": f"{prefix}.{suffix}.dead-letters",
        "experiments_topic": f"{prefix}.{suffix}.experiments",
        "tokens_topic": f"{prefix}.{suffix}.tokens",
    }


MakeSettings = Callable[..., Settings]


@pytest.fixture
def make_settings(kafka_bootstrap: str, tmp_path: Path) -> Iterator[MakeSettings]:
    """A factory: ``make_settings(partitions=4, create=True, **overrides) -> Settings``.

    Each call gets its own topic names (uuid suffix) and its own home under ``tmp_path``
    (``home``, ``home-1``, ...), with ``bootstrap_servers`` set to the session cluster. With
    ``create=True`` the three topics are created (inference and feedback co-partitioned with
    ``partitions`` partitions) before it returns. Any Settings field can be overridden.
    Topics this fixture knows about are deleted afterwards (without waiting).
    """
    names: list[str] = []
    counter = itertools.count()

    def factory(partitions: int = 4, create: bool = True, **overrides: Any) -> Settings:
        n = next(counter)
        values: dict[str, Any] = {
            "bootstrap_servers": kafka_bootstrap,
            "home": tmp_path / ("home" if n == 0 else f"home-{n}"),
            "partitions": partitions,
            **unique_topics(),
        }
        values.update(overrides)
        settings = Settings(**values)
        names.extend([settings.inference_topic, settings.feedback_topic, settings.dead_letter_topic,
                      settings.experiments_topic, settings.tokens_topic])
        if create:
            create_topics(settings)
        return settings

    yield factory
    _delete_topics(kafka_bootstrap, names)


@pytest.fixture
def settings_factory(make_settings: MakeSettings) -> MakeSettings:
    """Another name for :func:`make_settings`."""
    return make_settings


@pytest.fixture
def topic_settings(make_settings: MakeSettings) -> Settings:
    """Settings with fresh, created topics (4 co-partitioned partitions) on the session cluster."""
    return make_settings()


def _delete_topics(bootstrap: str, names: list[str]) -> None:
    """Best-effort clean-up so a long session doesn't pile up partitions on one small broker."""
    if not names:
        return
    from confluent_kafka.admin import AdminClient

    quiet = logging.getLogger("tests.librdkafka")
    quiet.propagate = False
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap}, logger=quiet)
        metadata = admin.list_topics(timeout=5)
        existing = [name for name in dict.fromkeys(names) if name in metadata.topics]
        if existing:
            admin.delete_topics(existing, operation_timeout=0)
    except Exception as exc:  # clean-up must never fail a test
        log.debug("could not delete test topics: %s", exc)


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``PREFPAIR_*`` environment that makes a CLI subprocess load exactly ``settings``."""
    env = {
        "PREFPAIR_HOME": str(settings.home),
        "PREFPAIR_INFERENCE_TOPIC": settings.inference_topic,
        "PREFPAIR_FEEDBACK_TOPIC": settings.feedback_topic,
        "PREFPAIR_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
        "PREFPAIR_EXPERIMENTS_TOPIC": settings.experiments_topic,
        "PREFPAIR_TOKENS_TOPIC": settings.tokens_topic,
        "PREFPAIR_PARTITIONS": str(settings.partitions),
        "PREFPAIR_REPLICATION_FACTOR": str(settings.replication_factor),
        "PREFPAIR_RETENTION_MS": str(settings.retention_ms),
    }
    if settings.bootstrap_servers:
        env["PREFPAIR_BOOTSTRAP_SERVERS"] = settings.bootstrap_servers
    if settings.schema_registry_url:
        env["PREFPAIR_SCHEMA_REGISTRY_URL"] = settings.schema_registry_url
    for key, value in settings.kafka.items():
        env["PREFPAIR_KAFKA_" + key.upper().replace(".", "_")] = value
    return env


RunCli = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def run_cli(tmp_path: Path) -> RunCli:
    """Run ``python -m prefpair.cli ARGS`` in a subprocess; returns the CompletedProcess (text).

    ``run_cli("topics", "create", settings=s, env={...}, timeout=120, cwd=None, input=None)``:
    ``settings`` becomes ``PREFPAIR_*`` variables (see :func:`settings_env`), ``env`` is added on
    top (a value of None removes the variable); inherited ``PREFPAIR_*`` variables are dropped so
    the caller's shell can't leak in. Runs in ``tmp_path`` so a default ``.prefpair`` lands there.
    """

    def run(
        *args: str,
        settings: Settings | None = None,
        env: dict[str, str | None] | None = None,
        timeout: float = 120.0,
        cwd: Path | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("PREFPAIR_")}
        if "PREFPAIR_BROKER_CACHE" in os.environ:  # the jar cache is machine-wide, keep it
            environ["PREFPAIR_BROKER_CACHE"] = os.environ["PREFPAIR_BROKER_CACHE"]
        if settings is not None:
            environ.update(settings_env(settings))
        for key, value in (env or {}).items():
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value
        return subprocess.run(
            [sys.executable, "-m", "prefpair.cli", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd or tmp_path,
            env=environ,
            input=input,
            check=False,
        )

    return run
