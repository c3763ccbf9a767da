"""Settings: flags > PREFPAIR_* environment > defaults, librdkafka passthrough, secrets, and errors.

Errors reach the user as one line and a non-zero exit, fast, whether the setting is malformed,
refused by librdkafka, or points at a cluster that doesn't answer.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from prefpair.cli import build_parser, settings_from_args
from prefpair.config import DEFAULT_FEEDBACK_TOPIC, DEFAULT_INFERENCE_TOPIC, Settings
from prefpair.errors import ConfigError, KafkaUnavailableError
from prefpair.kafka import client_config, create_admin, create_producer, resolve_bootstrap, wait_for_cluster

RunCli = Callable[..., "subprocess.CompletedProcess[str]"]


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return lines[0]


# ---------------------------------------------------------------------------- precedence
def test_defaults() -> None:
    settings = Settings.load(environ={})
    assert settings.bootstrap_servers is None
    assert settings.inference_topic == DEFAULT_INFERENCE_TOPIC
    assert settings.feedback_topic == DEFAULT_FEEDBACK_TOPIC
    assert settings.partitions == 4 and settings.replication_factor == 1
    assert settings.home == Path(".prefpair") and settings.broker_dir == Path(".prefpair/broker")
    assert dict(settings.kafka) == {}


def test_flags_beat_environment_beat_defaults() -> None:
    environ = {
        "PREFPAIR_PARTITIONS": "6",
        "PREFPAIR_INFERENCE_TOPIC": "env.inference",
        "PREFPAIR_BOOTSTRAP_SERVERS": "env-host:9092",
        "PREFPAIR_KAFKA_CLIENT_ID": "from-env",
    }
    settings = Settings.load({"partitions": 8, "bootstrap_servers": None}, environ=environ)
    assert settings.partitions == 8  # flag
    assert settings.bootstrap_servers == "env-host:9092"  # a flag left unset doesn't hide the env
    assert settings.inference_topic == "env.inference"  # env
    assert settings.feedback_topic == DEFAULT_FEEDBACK_TOPIC  # default
    flagged = Settings.load({"kafka": {"client.id": "from-flag"}}, environ=environ)
    assert flagged.kafka["client.id"] == "from-flag"


def test_command_line_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("PREFPAIR_")]:
        monkeypatch.delenv(name)
    parser = build_parser()

    def load(*argv: str) -> Settings:
        return settings_from_args(parser.parse_args(["topics", "create", *argv]))

    assert load().partitions == 4
    monkeypatch.setenv("PREFPAIR_PARTITIONS", "6")
    monkeypatch.setenv("PREFPAIR_FEEDBACK_TOPIC", "env.feedback")
    assert load().partitions == 6
    flagged = load("--partitions", "8", "--feedback-topic", "flag.feedback", "--kafka-option", "acks=all")
    assert flagged.partitions == 8 and flagged.feedback_topic == "flag.feedback"
    assert flagged.kafka["acks"] == "all"


def test_kafka_environment_passthrough(tmp_path: Path) -> None:
    properties = tmp_path / "client.properties"
    properties.write_text("# a comment\nsecurity.protocol=SASL_SSL\nsasl.username = file-user\n")
    environ = {
        "PREFPAIR_KAFKA_SASL_MECHANISMS": "PLAIN",
        "PREFPAIR_KAFKA_CONFIG_FILE": str(properties),
        "PREFPAIR_KAFKA_SASL_USERNAME": "env-user",
    }
    settings = Settings.load(environ=environ)
    assert settings.kafka["sasl.mechanisms"] == "PLAIN"
    assert settings.kafka["security.protocol"] == "SASL_SSL"
    assert settings.kafka["sasl.username"] == "env-user"  # variables beat the file
    config = client_config(settings.model_copy(update={"bootstrap_servers": "h:9092"}))
    assert config["sasl.mechanisms"] == "PLAIN" and config["bootstrap.servers"] == "h:9092"


def test_secrets_are_redacted() -> None:
    settings = Settings.load(
        environ={
            "PREFPAIR_KAFKA_SASL_USERNAME": "alice",
            "PREFPAIR_KAFKA_SASL_PASSWORD": "hunter2-secret-value",
            "PREFPAIR_KAFKA_SSL_KEY_PASSWORD": "other-secret-value",
        }
    )
    for text in (repr(settings), str(settings), f"{settings}", str(settings.redacted())):
        assert "hunter2-secret-value" not in text and "other-secret-value" not in text
        assert "alice" in text and "***" in text
    assert settings.kafka["sasl.password"] == "hunter2-secret-value"  # still usable


@pytest.mark.parametrize(
    ("environ", "field"),
    [
        ({"PREFPAIR_PARTITIONS": "0"}, "partitions"),
        ({"PREFPAIR_PARTITIONS": "many"}, "partitions"),
        ({"PREFPAIR_RETENTION_MS": "-5"}, "retention_ms"),
        ({"PREFPAIR_INFERENCE_TOPIC": ""}, "inference_topic"),
        ({"PREFPAIR_KAFKA_BOOTSTRAP_SERVERS": "x:1"}, "kafka"),
    ],
)
def test_invalid_settings_are_config_errors(environ: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.load(environ=environ)
    assert raised.value.field == field


def test_malformed_kafka_option_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("PREFPAIR_")]:
        monkeypatch.delenv(name)
    parser = build_parser()
    with pytest.raises(ConfigError, match="KEY=VALUE") as raised:
        settings_from_args(parser.parse_args(["topics", "describe", "--kafka-option", "acks"]))
    assert raised.value.field == "kafka" and raised.value.source == "--kafka-option"
    parsed = settings_from_args(parser.parse_args(["topics", "describe", "--kafka-option", "a.b=1=2"]))
    assert parsed.kafka == {"a.b": "1=2"}


def test_invalid_setting_via_cli_is_one_line(run_cli: RunCli) -> None:
    result = run_cli(
        "topics", "create", env={"PREFPAIR_PARTITIONS": "0", "PREFPAIR_BOOTSTRAP_SERVERS": "x:1"}
    )
    assert result.returncode == 2
    expected = "prefpair topics: error: PREFPAIR_PARTITIONS: Input should be greater than or equal to 1"
    assert _one_error_line(result) == expected


# ---------------------------------------------------------------------------- librdkafka and the cluster
def test_unknown_librdkafka_option_is_a_config_error(kafka_bootstrap: str, run_cli: RunCli) -> None:
    settings = Settings.load(
        {"bootstrap_servers": kafka_bootstrap, "kafka": {"no.such.option": "1"}}, environ={}
    )
    with pytest.raises(ConfigError, match=r"no\.such\.option"):
        create_producer(client_config(settings))

    result = run_cli(
        "topics", "create", "--bootstrap-servers", kafka_bootstrap, "--kafka-option", "no.such.option=1"
    )
    assert result.returncode == 2
    line = _one_error_line(result)
    assert line.startswith("prefpair topics: error:") and "no.such.option" in line

    env = {"PREFPAIR_BOOTSTRAP_SERVERS": kafka_bootstrap, "PREFPAIR_KAFKA_SECURITY_PROTOCOL": "pigeon"}
    bad_value = run_cli("topics", "create", env=env)
    assert "security.protocol" in _one_error_line(bad_value)


def test_unreachable_bootstrap_fails_fast_in_one_line(run_cli: RunCli) -> None:
    started = time.monotonic()
    result = run_cli("topics", "create", "--bootstrap-servers", "127.0.0.1:1", timeout=60)
    elapsed = time.monotonic() - started
    assert elapsed < 30, f"took {elapsed:.0f} s"
    line = _one_error_line(result)
    assert "127.0.0.1:1" in line and "unreachable" in line

    admin = create_admin({"bootstrap.servers": "127.0.0.1:1"})
    with pytest.raises(KafkaUnavailableError):
        wait_for_cluster(admin, "127.0.0.1:1", timeout=2)


def test_no_bootstrap_and_no_local_broker(run_cli: RunCli, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="prefpair broker start"):
        resolve_bootstrap(Settings(home=tmp_path))
    result = run_cli("topics", "create", "--home", str(tmp_path / "nothing-here"))
    assert result.returncode == 2
    assert "prefpair broker start" in _one_error_line(result)


def test_credentials_in_the_registry_url_are_not_logged() -> None:
    settings = Settings.load({"schema_registry_url": "https://alice:s3cret@registry.example:8081/path"}, environ={})
    assert "s3cret" not in repr(settings) and "alice" not in str(settings.redacted())
    assert settings.redacted()["schema_registry_url"] == "https://***@registry.example:8081/path"
    assert settings.schema_registry_url == "https://alice:s3cret@registry.example:8081/path"  # still usable


def test_s3_credentials_are_masked_and_come_in_pairs() -> None:
    secret = "wJalrXUtnFEMI-example-secret"
    environ = {"PREFPAIR_S3_ACCESS_KEY_ID": "AKID", "PREFPAIR_S3_SECRET_ACCESS_KEY": secret,
               "PREFPAIR_S3_ENDPOINT_URL": "http://user:pw@s3.internal:8333"}  # fmt: skip
    settings = Settings.load(environ=environ)
    assert secret not in repr(settings) and secret not in str(settings.redacted()) and "pw@" not in repr(settings)
    options = settings.s3_options()
    assert secret not in repr(options) and options.secret_access_key is not None
    assert options.secret_access_key.get_secret_value() == secret  # still usable
    with pytest.raises(ConfigError, match="PREFPAIR_S3_SECRET_ACCESS_KEY"):
        Settings.load(environ={"PREFPAIR_S3_ACCESS_KEY_ID": "AKID"}).s3_options()
    with pytest.raises(ConfigError, match="--s3-access-key-id"):
        Settings.load(environ={"PREFPAIR_S3_SECRET_ACCESS_KEY": secret}).s3_options()


def test_a_location_is_a_path_or_an_s3_url() -> None:
    from prefpair.compile.cli import JOB_FLAGS

    assert JOB_FLAGS.load({"out": "s3://bucket/x"}, environ={}).out == "s3://bucket/x"
    with pytest.raises(ConfigError, match="PREFPAIR_COMPILE_OUT: unsupported scheme gs://"):
        JOB_FLAGS.load(environ={"PREFPAIR_COMPILE_OUT": "gs://bucket/x"})


def _judge_endpoint_without_model() -> None:
    from prefpair.judge.config import JudgeConfig

    JudgeConfig(endpoint="http://127.0.0.1:9/v1", judge_model=None).check_evaluator()


def _traffic_spec_out_of_range() -> None:
    from prefpair.simulate import TrafficSpec

    TrafficSpec(tie_share=1.5)


def _report_experiments_file_missing(tmp_path: Path) -> None:
    from prefpair.report.experiments import read_definitions

    read_definitions(tmp_path / "no-such-experiments.json")


@pytest.mark.parametrize(
    ("make_error", "area_error", "field"),
    [
        (lambda tmp: _judge_endpoint_without_model(), "JudgeConfigError", "judge_model"),
        (lambda tmp: _traffic_spec_out_of_range(), "TrafficSpecError", "tie_share"),
        (_report_experiments_file_missing, "ReportInputError", "experiments"),
    ],
)
def test_every_areas_bad_setting_is_a_config_error_with_its_field_and_reason(
    make_error: Callable[[Path], None], area_error: str, field: str, tmp_path: Path
) -> None:
    """One ``except ConfigError`` catches a bad setting of any area (the compile's was one already)."""
    with pytest.raises(ConfigError) as caught:
        make_error(tmp_path)
    error = caught.value
    assert type(error).__name__ == area_error
    assert error.field == field and error.reason
    assert str(error) == f"{field}: {error.reason}"
