"""``prefpair demo`` end to end, the way the README's first command runs it: no cluster configured,
so it starts its own local broker, and it must leave no process behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import duckdb
import pytest

from prefpair.schemas.log import table_files


def _brokers_under(path: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "kafka.Kafka" in line and str(path) in line]


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline_and_stops_its_broker(run_cli: Any, tmp_path: Path) -> None:
    home = tmp_path / "demo-home"
    result = run_cli("demo", "--requests", "400", "--seed", "3", "--home", str(home), timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout
    lines = ("joined rows", "orphans", "dead letters", "judge run", "experiment", "pairs", "implicit pairs",
             "signals landed", "drops by reason", "dataset", "report")
    for line in lines:
        assert line in out, f"summary lacks {line!r}:\n{out}"
    assert "broker stopped" in result.stderr
    assert _brokers_under(home) == [], "the demo left its broker running"

    dataset = Path(next(line.split()[-1] for line in out.splitlines() if line.strip().startswith("dataset")))
    manifest = json.loads((dataset / "manifest.json").read_text())
    pairs = int(next(line.split()[1].rstrip(":") for line in out.splitlines() if line.strip().startswith("pairs")))
    assert pairs > 100 and sum(manifest["counts"]["splits"].values()) == pairs
    first = json.loads((dataset / "trl" / "train.jsonl").read_text().splitlines()[0])
    assert set(first) >= {"prompt", "chosen", "rejected"}
    dead = int(next(line.split()[2] for line in out.splitlines() if line.strip().startswith("dead letters")))
    assert dead == 6  # the simulator's malformed messages, each routed once
    assert (dataset.parent / "report" / "report.html").exists()
    report = json.loads((dataset.parent / "report" / "report.json").read_text())
    assert report["health"]["compile_drop_counts"] == manifest["counts"]["drops"]
    assert report["health"]["dead_letters"] == 6
    # the judge's feedback went through Kafka and the consumer into the log, once each
    judged = int(next(line.split()[2] for line in out.splitlines() if line.strip().startswith("judge run")))
    log_dir = Path(next(line.split()[-1] for line in out.splitlines() if line.strip().startswith("log ")))
    files = [str(f) for f in table_files(log_dir, "feedback")]
    keys = duckdb.sql(f"SELECT count(*), count(DISTINCT feedback_id) FROM read_parquet({files}) "
                      "WHERE key = 'length_judge' AND source.type = 'MODEL_JUDGE'").fetchall()  # fmt: skip
    assert judged > 100 and keys == [(judged, judged)]
    # the judge run is part of the demo's experiment: its judgments carry the id, and the report's
    # section (named from the experiments topic) and the summary give the same winner statement
    summary = out.splitlines()
    at = next(i for i, line in enumerate(summary) if line.strip().startswith("experiment "))
    experiment_id = summary[at].split()[1].rstrip(":")
    statement = summary[at + 1].strip()
    tagged = duckdb.sql(f"SELECT count(*) FROM read_parquet({files}, union_by_name = true) "
                        f"WHERE experiment_id = '{experiment_id}'").fetchall()  # fmt: skip
    assert tagged == [(judged,)]
    (section,) = [e for e in report["experiments"] if e["experiment_id"] == experiment_id]
    assert section["name"] == "chat-large against chat-small" and section["arms"] == ["chat-large", "chat-small"]
    assert 0 < section["judgments"] <= judged  # pairs of one arm (two versions of a model) are not head to head
    assert section["statement"] == statement
    assert statement.startswith(("Winner: ", "No winner yet"))
