"""The report's implicit-rules section on planted traffic: each rule's agreement with the explicit
judgments of the same requests recovers its planted accuracy within the interval."""

from __future__ import annotations

import pytest

from prefpair.report import ReportConfig, build_report
from prefpair.simulate.signals import SignalPlan, planted_actions, write_planted

PLAN = SignalPlan(requests_per_rule=300, seed=7,
                  accuracy={"regenerate": 0.75, "copy": 0.85, "select": 0.3, "conversion": 0.8, "dwell": 0.6,
                            "edit": 1.0})  # fmt: skip


@pytest.fixture(scope="module")
def report_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    root = tmp_path_factory.mktemp("planted")
    write_planted(root / "log", PLAN)
    report = build_report(root / "log", root / "report", ReportConfig(bootstrap_rounds=10, confidence=0.99))
    html = report.html_path.read_text(encoding="utf-8")
    assert "6. Implicit rules against explicit judgments" in html and "IMPLICIT:&lt;rule&gt;" in html
    return {row["rule"]: row for row in report.data["implicit_rules"]["rules"]}


@pytest.mark.parametrize("rule", ["regenerate", "copy", "select", "conversion", "dwell"])
def test_rule_agreement_recovers_the_planted_accuracy(report_data: dict[str, dict[str, object]], rule: str) -> None:
    row = report_data[rule]
    planted = PLAN.accuracy[rule]
    assert row["n"] == PLAN.requests_per_rule  # one explicit verdict per request
    low, high = float(row["ci_low"]), float(row["ci_high"])  # type: ignore[arg-type]
    assert low <= planted <= high, (rule, row)
    assert high - low < 0.16  # narrow enough to tell a good rule from a bad one
    assert row["by_source"] and row["by_source"][0]["n"] == row["n"]  # type: ignore[index]


def test_a_bad_rule_is_told_apart_and_an_edit_has_no_verdict(report_data: dict[str, dict[str, object]]) -> None:
    assert float(report_data["select"]["ci_high"]) < 0.5 < float(report_data["copy"]["ci_low"])  # type: ignore[arg-type]
    edit = report_data["edit"]
    assert edit["n"] == 0 and edit["value"] is None and edit["preferences"] == PLAN.requests_per_rule


def test_planted_traffic_is_deterministic() -> None:
    assert planted_actions(PLAN) == planted_actions(PLAN)
    assert planted_actions(PLAN) != planted_actions(SignalPlan(requests_per_rule=300, seed=8, accuracy=PLAN.accuracy))
