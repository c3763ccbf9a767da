"""Comparative experiments in the report: always-valid winner statements on planted logs, the
confidence sequence's coverage on simulated data, and logs written before the experiment columns.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from prefpair.report import ReportConfig, build_report
from prefpair.report.sequential import confidence_sequence, ever_excludes, judgments_needed, radius
from prefpair.schemas import ValidationError
from prefpair.schemas.experiments import Experiment
from prefpair.schemas.log import ADDED_COLUMNS, table_files
from prefpair.service.reads import FeedbackFilter, LogReader
from prefpair.simulate import LogBuilder

FAST = ReportConfig(bootstrap_rounds=20, seed=1)
CANDIDATES = (("a", "Paris.", "model-a", "v1"), ("b", "Lyon.", "model-b", "v2"))


def _plant(log: Path, experiment_id: str, wins_a: int, wins_b: int, ties: int, *, seed: int = 0) -> None:
    """Pairwise judgments of model-a against model-b in one experiment, in a seeded random order."""
    outcomes = ["a"] * wins_a + ["b"] * wins_b + ["tie"] * ties
    np.random.default_rng(seed).shuffle(outcomes)
    builder = LogBuilder(log, partition=0)
    for i, outcome in enumerate(outcomes):
        request = f"{experiment_id}-r{i}"
        builder.inference(request, candidates=CANDIDATES, presented=["a", "b"] if i % 2 else ["b", "a"])
        chosen, rejected = ("b", "a") if outcome == "b" else ("a", "b")
        builder.pairwise(
            request, chosen, rejected, outcome="TIE" if outcome == "tie" else "PREFERRED", feedback_id=f"{request}-f",
            experiment_id=experiment_id, feedback_group_id=f"session-{i // 10}",
        )  # fmt: skip
    builder.commit()


def test_the_report_states_a_winner_on_planted_data_and_no_winner_on_a_planted_tie(tmp_path: Path) -> None:
    log = tmp_path / "log"
    _plant(log, "exp-win", wins_a=270, wins_b=110, ties=20, seed=1)  # model-a wins ~70 %
    _plant(log, "exp-tie", wins_a=180, wins_b=180, ties=40, seed=2)  # dead even
    definitions = [
        Experiment.new("A against B", ["model-a", "model-b"], experiment_id="exp-win", created_ms=1),
        Experiment.new("An even match", ["model-a:v1", "model-b"], experiment_id="exp-tie", created_ms=2),
        Experiment.new("Not started", ["model-a", "model-c"], experiment_id="exp-empty", created_ms=3),
    ]
    definitions_file = tmp_path / "experiments.json"
    definitions_file.write_text(json.dumps({"items": [e.model_dump(mode="json") for e in definitions]}))
    report = build_report(log, tmp_path / "out", FAST.model_copy(update={"experiments": definitions_file}))

    sections = {e["experiment_id"]: e for e in report.experiments}
    assert list(sections) == ["exp-win", "exp-tie", "exp-empty"]
    win, tie, empty = sections["exp-win"], sections["exp-tie"], sections["exp-empty"]

    assert win["winner"] == "model-a" and win["statement"].startswith("Winner: model-a")
    (pair,) = win["pairs"]
    assert (pair["arm_a"], pair["arm_b"], pair["judgments"]) == ("model-a", "model-b", 400)
    assert (pair["wins_a"], pair["wins_b"], pair["ties"]) == (270, 110, 20)
    assert pair["win_rate_a"] == pytest.approx((270 + 10) / 400)
    assert 0.5 < pair["ci_low"] < pair["win_rate_a"] < pair["ci_high"]
    assert win["judgments_needed"] is None

    assert tie["winner"] is None and tie["statement"].startswith("No winner yet")
    (even,) = tie["pairs"]
    assert even["judgments"] == 400 and even["win_rate_a"] == pytest.approx(0.5)
    assert even["ci_low"] < 0.5 < even["ci_high"]
    assert tie["judgments_needed"] is None  # at an even win rate no number of judgments settles it
    assert "look even" in tie["statement"]

    assert empty["winner"] is None and empty["judgments"] == 0 and empty["pairs"][0]["win_rate_a"] is None

    data = json.loads(report.json_path.read_text())
    assert [e["experiment_id"] for e in data["experiments"]] == ["exp-win", "exp-tie", "exp-empty"]
    page = report.html_path.read_text()
    assert 'id="experiments"' in page and 'id="experiment-exp-win"' in page
    assert "Winner: model-a" in page and "No winner yet" in page and "A against B" in page


def test_an_undecided_lead_says_how_many_more_judgments_it_needs(tmp_path: Path) -> None:
    log = tmp_path / "log"
    _plant(log, "exp-early", wins_a=24, wins_b=16, ties=0, seed=3)  # 60 % over 40 judgments: not yet
    (section,) = build_report(log, tmp_path / "out", FAST).experiments
    assert section["defined"] is False and section["arms"] == ["model-a:v1", "model-b:v2"]
    assert section["winner"] is None
    needed = section["judgments_needed"]
    assert needed == judgments_needed(0.6, 40, section["pair_alpha"]) and needed > 0
    assert radius(40 + needed, section["pair_alpha"]) < 0.1 <= radius(40 + needed - 1, section["pair_alpha"])
    assert f"About {needed} more judgments" in section["statement"]


def test_the_confidence_sequence_covers_the_truth_at_every_look(tmp_path: Path) -> None:
    """Over many seeded sequences, the share whose sequence ever (at any n) excludes the true win
    probability stays below alpha, while a fixed-horizon 95 % interval looked at after every
    judgment excludes it far more often (which is why the report does not use one)."""
    alpha, truth, runs, length = 0.05, 0.6, 400, 2000
    rng = np.random.default_rng(20261129)
    u = rng.random((runs, length))
    scores = np.where(u < 0.55, 1.0, np.where(u < 0.65, 0.5, 0.0))  # P(win) .55, P(tie) .10: mean 0.6
    misses = sum(ever_excludes(row, truth, alpha) for row in scores)
    n = np.arange(1, length + 1)
    means = np.cumsum(scores, axis=1) / n
    sd = np.sqrt(np.cumsum((scores - means[:, -1:]) ** 2, axis=1) / n)  # plug-in, per run
    naive = int(np.sum(np.any((np.abs(means - truth) > 1.96 * sd / np.sqrt(n))[:, 10:], axis=1)))
    print(f"ever excluded the truth: sequence {misses}/{runs}, daily-peeked fixed interval {naive}/{runs}")
    assert misses / runs < alpha
    assert naive / runs > 2 * alpha
    final = confidence_sequence(scores[0], alpha)
    assert final.n == length and final.low < truth < final.high


def test_experiment_definitions_are_checked() -> None:
    with pytest.raises(ValidationError) as info:
        Experiment.new("x", ["model-a"])
    assert info.value.field == "arms"
    with pytest.raises(ValidationError) as info:
        Experiment.new("x", ["model-a", "model-a"])
    assert info.value.field == "arms" and "twice" in str(info.value)
    with pytest.raises(ValidationError) as info:
        Experiment.new("", ["model-a", "model-b"])
    assert info.value.field == "name"
    experiment = Experiment.new("x", ["model-a", "model-b:v2"], metadata={"owner": "me"})
    assert Experiment.from_bytes(experiment.to_bytes()) == experiment
    assert experiment.arm_of("model-a:v9") == "model-a" and experiment.arm_of("model-b:v1") is None


def test_a_log_written_before_the_experiment_columns_still_reads(tmp_path: Path) -> None:
    log = tmp_path / "log"
    _plant(log, "exp-old", wins_a=6, wins_b=4, ties=0)
    for table in ("feedback", "orphans"):
        for path in table_files(log, table):
            old = pq.read_table(path)
            pq.write_table(old.drop_columns([c for c in ADDED_COLUMNS[table] if c in old.column_names]), path)
    assert "experiment_id" not in pq.read_table(table_files(log, "feedback")[0]).column_names
    report = build_report(log, tmp_path / "out", FAST)
    assert report.experiments == [] and report.ratings
    items, _ = LogReader(log).list_feedback(FeedbackFilter(), limit=20)
    assert len(items) == 10 and all(item["experiment_id"] is None for item in items)


def test_the_service_reads_show_experiment_and_group_ids(tmp_path: Path) -> None:
    log = tmp_path / "log"
    _plant(log, "exp-read", wins_a=2, wins_b=1, ties=0)
    items, _ = LogReader(log).list_feedback(FeedbackFilter(), limit=20)
    assert {item["experiment_id"] for item in items} == {"exp-read"}
    assert {item["feedback_group_id"] for item in items} == {"session-0"}
