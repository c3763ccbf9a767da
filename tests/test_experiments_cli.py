"""Comparative experiments end to end on the shared broker: ``prefpair experiments create|list``,
a judge run tagging its experiment, the report naming experiments from the experiments topic, and
``prefpair topics create`` making the experiments and tokens topics up front.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource
from conftest import MakeSettings, settings_env
from test_experiments import _plant
from test_judge import build_log, read_topic

from prefpair.cli import main
from prefpair.config import Settings
from prefpair.event_topics import DEFAULT_TOKEN_MAX_TTL_S, TOKEN_HISTORY_SLACK_S
from prefpair.judge import JudgeConfig
from prefpair.report.experiments import read_definitions
from prefpair.topics import create_topics


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """``cli(*args, settings=s)``: the ``prefpair`` command in this process (quicker than a subprocess),
    with exactly the ``PREFPAIR_*`` environment that loads ``settings``."""

    def run(*args: str, settings: Settings) -> Ran:
        for name in [n for n in os.environ if n.startswith("PREFPAIR_")]:
            monkeypatch.delenv(name)
        for name, value in settings_env(settings).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


def test_experiments_are_created_and_listed_by_the_cli_and_a_judge_run_tags_one(
    make_settings: MakeSettings, cli: Any, tmp_path: Path
) -> None:
    settings = make_settings(partitions=2)
    refused = cli("experiments", "create", "--name", "lonely", "--arm", "model-0", settings=settings)
    assert refused.returncode == 2
    assert "--arm" in refused.stderr and "at least 2" in refused.stderr, refused.stderr
    nameless = cli("experiments", "create", "--arm", "model-0,model-1", settings=settings)
    assert nameless.returncode == 2 and "--name: give the experiment a name" in nameless.stderr

    created = cli("experiments", "create", "--name", "zero vs one", "--arm", "model-0", "--arm", "model-1",
                      "--id", "exp-cli", "--metadata", "team=chat", settings=settings)  # fmt: skip
    assert created.returncode == 0, created.stderr
    definition = json.loads(created.stdout)
    assert definition["experiment_id"] == "exp-cli" and definition["arms"] == ["model-0", "model-1"]
    assert definition["metadata"] == {"team": "chat"}
    again = cli("experiments", "create", "--name", "zero vs one", "--arm", "model-0", "--arm", "model-1",
                "--id", "exp-cli", "--metadata", "team=chat", settings=settings)  # fmt: skip
    assert again.returncode == 0 and json.loads(again.stdout) == definition  # the stored one, unchanged
    redefined = cli("experiments", "create", "--name", "zero vs two", "--arm", "model-0,model-2", "--id", "exp-cli",
                    settings=settings)  # fmt: skip
    assert redefined.returncode == 2
    assert "--id: experiment 'exp-cli' exists with another definition" in redefined.stderr
    other = cli("experiments", "create", "--name", "later", "--arm", "a,b", settings=settings)
    assert other.returncode == 0, other.stderr
    other_id = json.loads(other.stdout)["experiment_id"]

    listed = cli("experiments", "list", settings=settings)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    expected = [["exp-cli", "zero vs one", "model-0 vs model-1"], [other_id, "later", "a vs b"]]
    assert [row[:3] for row in rows] == expected
    as_json = cli("experiments", "list", "--json", settings=settings)
    assert as_json.returncode == 0, as_json.stderr
    (tmp_path / "experiments.json").write_text(as_json.stdout)
    read_back = read_definitions(tmp_path / "experiments.json")  # what `report --experiments FILE` reads
    assert [(e.experiment_id, e.name, e.arms) for e in read_back] == [
        ("exp-cli", "zero vs one", ("model-0", "model-1")), (other_id, "later", ("a", "b"))
    ]

    made = build_log(settings.log_dir, settings, requests=20)
    mistyped = cli("judge", "--evaluator", "length", "--experiment-id", "exp-clj", "--no-progress", settings=settings)
    assert mistyped.returncode == 2 and "experiment_id: no experiment 'exp-clj'" in mistyped.stderr
    assert read_topic(settings) == []  # refused before anything was written
    judged = cli("judge", "--evaluator", "length", "--model", "model-0,model-1", "--experiment-id", "exp-cli",
                     "--feedback-group-id", "nightly", "--no-progress", settings=settings)  # fmt: skip
    assert judged.returncode == 0, judged.stderr
    records = read_topic(settings)
    assert len(records) == sum(len(c) * (len(c) - 1) // 2 for c in made.values())  # every pair, once
    assert {(r["experiment_id"], r["feedback_group_id"], r["key"]) for r in records} == {
        ("exp-cli", "nightly", "preference")
    }


def test_the_report_names_experiments_from_the_experiments_topic(
    make_settings: MakeSettings, cli: Any, tmp_path: Path
) -> None:
    settings = make_settings(partitions=1)
    log = tmp_path / "log"
    _plant(log, "exp-topic", wins_a=150, wins_b=50, ties=0, seed=3)
    created = cli("experiments", "create", "--name", "A against B from the topic", "--arm", "model-a",
                      "--arm", "model-b", "--id", "exp-topic", settings=settings)  # fmt: skip
    assert created.returncode == 0, created.stderr

    def experiments_of(*flags: str) -> list[dict[str, Any]]:
        out = tmp_path / f"out{len(flags)}"
        result = cli("report", "--log-dir", str(log), "--out", str(out), "--bootstrap-rounds", "10", *flags,
                         settings=settings)  # fmt: skip
        assert result.returncode == 0, result.stderr
        sections: list[dict[str, Any]] = json.loads((out / "report.json").read_text())["experiments"]
        return sections

    (section,) = experiments_of()
    assert section["experiment_id"] == "exp-topic" and section["name"] == "A against B from the topic"
    assert section["winner"] == "model-a" and section["statement"].startswith("Winner: model-a")

    definitions = tmp_path / "file.json"  # a file given wins over the topic
    definitions.write_text(json.dumps([{**json.loads(created.stdout), "name": "from the file"}]))
    (section,) = experiments_of("--experiments", str(definitions))
    assert section["name"] == "from the file"


def _topic_configs(settings: Settings, names: tuple[str, ...]) -> dict[str, dict[str, str]]:
    assert settings.bootstrap_servers is not None
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    futures = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, name) for name in names])
    return {resource.name: {k: v.value for k, v in f.result(30).items()} for resource, f in futures.items()}


def test_topics_create_makes_the_experiments_and_tokens_topics(make_settings: MakeSettings) -> None:
    settings = make_settings(partitions=2, create=False, retention_ms=3_600_000)
    report = create_topics(settings)
    events = (settings.experiments_topic, settings.tokens_topic)
    assert set(events) <= set(report.created)
    assert {name: report.partitions[name] for name in events} == dict.fromkeys(events, 1)
    configs = _topic_configs(settings, events)
    assert configs[settings.experiments_topic]["cleanup.policy"] == "compact"
    assert configs[settings.tokens_topic]["cleanup.policy"] == "delete"
    # tokens live up to 30 days by default: their events are kept that long and a day, not the hour asked
    kept_ms = (DEFAULT_TOKEN_MAX_TTL_S + TOKEN_HISTORY_SLACK_S) * 1000
    assert configs[settings.tokens_topic]["retention.ms"] == str(kept_ms)
    assert create_topics(settings).created == ()  # idempotent


def test_an_experiment_makes_another_judge_run_and_leaves_untagged_runs_as_they_were() -> None:
    plain = JudgeConfig(evaluator="length")
    assert not {"experiment_id", "feedback_group_id"} & set(plain.definition(None))  # their run ids stay
    tagged = plain.model_copy(update={"experiment_id": "exp-1"})
    grouped = tagged.model_copy(update={"feedback_group_id": "g-1"})
    run_ids = {c.resolved_run_id(None) for c in (plain, tagged, grouped)}
    assert len(run_ids) == 3
