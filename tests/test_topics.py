"""`prefpair topics create`: co-partitioned, idempotent, and refuses pairs that can't be joined."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from prefpair.config import Settings
from prefpair.errors import ConfigError
from prefpair.topics import create_topics, describe_topics, ensure_topics

MakeSettings = Callable[..., Settings]
RunCli = Callable[..., "subprocess.CompletedProcess[str]"]


def _partitions(settings: Settings) -> dict[str, int]:
    assert settings.bootstrap_servers is not None
    metadata = AdminClient({"bootstrap.servers": settings.bootstrap_servers}).list_topics(timeout=10)
    names = (settings.inference_topic, settings.feedback_topic, settings.dead_letter_topic)
    return {name: len(metadata.topics[name].partitions) for name in names if name in metadata.topics}


def _create_raw(settings: Settings, counts: dict[str, int]) -> None:
    assert settings.bootstrap_servers is not None
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in counts.items()]
    )
    for future in futures.values():
        future.result(30)


def test_create_makes_co_partitioned_topics_and_the_event_topics(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=3, create=False, retention_ms=3_600_000)
    report = create_topics(settings)
    names = (settings.inference_topic, settings.feedback_topic, settings.dead_letter_topic)
    events = (settings.experiments_topic, settings.tokens_topic)  # one partition each: test_experiments_cli
    assert set(report.created) == {*names, *events}
    assert report.partitions == dict.fromkeys(names, 3) | dict.fromkeys(events, 1)
    assert report.co_partitions == 3
    assert _partitions(settings) == dict.fromkeys(names, 3)

    described = describe_topics(settings)
    for name in names:
        info = described[name]
        assert info is not None and info.partitions == 3 and info.replication_factor == 1
        assert info.retention_ms == "3600000"


def test_create_is_idempotent(make_settings: MakeSettings, run_cli: RunCli) -> None:
    settings = make_settings(partitions=2)  # creates the topics once
    report = create_topics(settings)
    assert report.created == ()
    assert report.co_partitions == 2
    assert ensure_topics(settings) == 2

    again = run_cli("topics", "create", settings=settings)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("exists") == 5 and "created" not in again.stdout

    # Existing co-partitioned topics are kept even if another count is asked for now.
    assert create_topics(settings.model_copy(update={"partitions": 6})).co_partitions == 2
    assert set(_partitions(settings).values()) == {2}


def test_missing_partner_gets_the_existing_count(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=4, create=False)
    _create_raw(settings, {settings.inference_topic: 3})
    report = create_topics(settings)
    assert report.created == (settings.feedback_topic, settings.dead_letter_topic, settings.experiments_topic,
                              settings.tokens_topic)
    assert report.partitions[settings.feedback_topic] == 3
    assert _partitions(settings)[settings.feedback_topic] == 3


def test_not_co_partitioned_is_refused(make_settings: MakeSettings, run_cli: RunCli) -> None:
    settings = make_settings(partitions=4, create=False)
    _create_raw(settings, {settings.inference_topic: 2, settings.feedback_topic: 3})

    with pytest.raises(ConfigError) as raised:
        create_topics(settings)
    message = str(raised.value)
    assert settings.inference_topic in message and "2 partitions" in message
    assert settings.feedback_topic in message and "3 partitions" in message
    assert "co-partitioned" in message
    assert settings.dead_letter_topic not in _partitions(settings)  # refused before creating anything

    result = run_cli("topics", "create", settings=settings)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert settings.inference_topic in lines[0] and settings.feedback_topic in lines[0]

    described = run_cli("topics", "describe", settings=settings)
    assert described.returncode == 1 and "not co-partitioned" in described.stdout


def test_describe_exit_codes(make_settings: MakeSettings, run_cli: RunCli) -> None:
    settings = make_settings(partitions=2, create=False)
    missing = run_cli("topics", "describe", settings=settings)
    assert missing.returncode == 1, missing.stderr
    assert missing.stdout.count("missing") == 3

    created = run_cli("topics", "create", "--partitions", "5", settings=settings)
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("5 partitions") == 3

    present = run_cli("topics", "describe", settings=settings)
    assert present.returncode == 0, present.stderr
    assert present.stdout.count("5 partitions") == 3


def test_impossible_replication_factor_is_a_config_error(make_settings: MakeSettings) -> None:
    settings = make_settings(create=False, replication_factor=32)  # more than any test cluster has
    with pytest.raises(ConfigError) as raised:
        create_topics(settings)
    assert raised.value.field == "replication_factor"


def test_topic_names_must_differ(make_settings: MakeSettings) -> None:
    settings = make_settings(create=False)
    same = settings.model_copy(update={"feedback_topic": settings.inference_topic})
    with pytest.raises(ConfigError, match="must differ"):
        create_topics(same)
