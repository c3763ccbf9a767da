"""``prefpair report`` on synthetic logs with a planted truth, and on hand-built segments.

No broker needed: the logs are written as committed segments by prefpair.report.synthetic,
exactly as schemas/log.py lays them out. The HTML is rendered by a real headless Chromium.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest

from prefpair.report import EmptyLogError, Report, ReportConfig, build_report
from prefpair.report.load import load_log
from prefpair.report.render import PLOT_IDS, fmt
from prefpair.report.synthetic import START_MS, SegmentWriter, write_planted_log

CHROMIUM = Path("/usr/bin/chromium")
PLANTED = {"chat-small:1": -0.9, "chat-small:2": -0.3, "chat-large:1": 0.3, "chat-large:2": 0.9}
PLANTED_ORDER = sorted(PLANTED, key=lambda m: -PLANTED[m])
FAST = ReportConfig(bootstrap_rounds=60, seed=1)

BuildPlanted = Callable[..., Report]


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> BuildPlanted:
    """Build (once per argument set) a report over a planted log (one log per planted truth)."""
    logs: dict[tuple[float, float, int], Path] = {}
    reports: dict[tuple[Any, ...], Report] = {}

    def build(position_bias: float = 0.0, length_bias: float = 0.0, seed: int = 11, **config: Any) -> Report:
        truth = (position_bias, length_bias, seed)
        if truth not in logs:
            logs[truth] = tmp_path_factory.mktemp("planted") / "log"
            write_planted_log(
                logs[truth],
                models=PLANTED,
                n_requests=3000,
                position_bias=position_bias,
                length_bias=length_bias,
                seed=seed,
            )
        key = (*truth, tuple(sorted(config.items())))
        if key not in reports:
            out = tmp_path_factory.mktemp("report")
            reports[key] = build_report(logs[truth], out, FAST.model_copy(update=config))
        return reports[key]

    return build


def _excludes(interval: dict[str, Any], value: float) -> bool:
    return bool(interval["ci_low"] > value or interval["ci_high"] < value)


# --------------------------------------------------------------------------- planted truth
def test_planted_model_order_is_recovered_by_bradley_terry_and_elo(planted: BuildPlanted) -> None:
    report = planted()
    table = report.ratings["table"]
    by_bt = [row["model"] for row in sorted(table, key=lambda r: r["bt_rank"])]
    by_elo = [row["model"] for row in sorted(table, key=lambda r: r["elo_rank"])]
    assert by_bt == PLANTED_ORDER
    assert by_elo == PLANTED_ORDER
    strengths = {row["model"]: row["bt_strength"] for row in table}
    for model, truth in PLANTED.items():  # the MLE lands near the planted logits
        assert strengths[model] == pytest.approx(truth, abs=0.2)
    for row in table:
        assert row["bt_ci_low"] < row["bt_rating"] < row["bt_ci_high"]
        assert row["elo_ci_low"] < row["elo_median"] < row["elo_ci_high"]
    matrix = report.ratings["win_rate_matrix"]
    best, worst = matrix["models"].index(PLANTED_ORDER[0]), matrix["models"].index(PLANTED_ORDER[-1])
    assert matrix["win_rate"][best][worst] > 0.75
    assert matrix["win_rate"][best][worst] + matrix["win_rate"][worst][best] == pytest.approx(1.0)


def test_no_bias_is_found_where_none_was_planted(planted: BuildPlanted) -> None:
    overall = planted().bias["overall"]
    assert not _excludes(overall["position"]["first_shown_win_rate"], 0.5)
    assert not _excludes(overall["position"]["controlled_logit"], 0.0)
    assert not _excludes(overall["length"]["longer_win_rate"], 0.5)
    assert not _excludes(overall["length"]["controlled_logit"], 0.0)


def test_planted_position_bias_is_detected(planted: BuildPlanted) -> None:
    bias = planted(position_bias=0.5).bias
    first = bias["overall"]["position"]["first_shown_win_rate"]
    assert first["ci_low"] > 0.5, first
    assert bias["overall"]["position"]["controlled_logit"]["ci_low"] > 0
    assert not _excludes(bias["overall"]["length"]["controlled_logit"], 0.0)
    for source in ("APP_USER", "MODEL_JUDGE", "HUMAN_ANNOTATOR"):
        assert bias["per_source"][source]["position"]["first_shown_win_rate"]["ci_low"] > 0.5, source
    # the planted reward model scores without seeing the order: no position bias there
    assert not _excludes(bias["per_source"]["REWARD_MODEL"]["position"]["first_shown_win_rate"], 0.5)


def test_planted_length_bias_is_detected(planted: BuildPlanted) -> None:
    bias = planted(length_bias=0.8).bias
    length = bias["overall"]["length"]
    assert length["longer_win_rate"]["ci_low"] > 0.5, length["longer_win_rate"]
    assert length["controlled_logit"]["ci_low"] > 0
    assert length["controlled_longer_win_rate"]["ci_low"] > 0.5
    assert length["controlled_logit"]["value"] == pytest.approx(0.8, abs=0.25)
    buckets = [b["value"] for b in length["by_length_ratio"]]
    assert buckets[-1] > buckets[0]  # the bigger the gap, the more the longer answer wins
    assert not _excludes(bias["overall"]["position"]["first_shown_win_rate"], 0.5)
    assert bias["chosen_length_trend"]["chosen_longer_share"] > 0.5


def test_ratings_per_source_type(planted: BuildPlanted) -> None:
    per_source = planted(per_source=True).data["ratings_per_source"]
    assert set(per_source) == {"APP_USER", "HUMAN_ANNOTATOR", "MODEL_JUDGE", "REWARD_MODEL"}
    for source in ("APP_USER", "HUMAN_ANNOTATOR", "MODEL_JUDGE"):
        ranked = [r["model"] for r in sorted(per_source[source]["table"], key=lambda r: r["bt_rank"])]
        assert ranked == PLANTED_ORDER, source
    assert per_source["REWARD_MODEL"]["comparisons"] == 0  # score pairs rate only when asked


# --------------------------------------------------------------------------- hand-built segments
def _inference(request: str, models: tuple[str, str] = ("m-x:1", "m-y:1"), ts: int = START_MS) -> dict[str, Any]:
    candidates = []
    for cid, model in zip(("a", "b"), models, strict=True):
        name, version = model.split(":")
        candidates.append(
            {
                "candidate_id": cid,
                "text": f"answer {cid} " * (3 if cid == "a" else 5),
                "model_name": name,
                "model_version": version,
            }
        )
    return {
        "event_id": f"i-{request}",
        "request_id": request,
        "timestamp_ms": ts,
        "prompt": "q?",
        "candidates": candidates,
        "presentation_order": ["a", "b"],
    }


def _pairwise(
    fid: str,
    request: str,
    chosen: str,
    source: dict[str, Any] | None,
    ts: int = START_MS + 1000,
    op: str = "CREATE",
    outcome: str | None = "PREFERRED",
    **extra: Any,
) -> dict[str, Any]:
    rejected = "b" if chosen == "a" else "a"
    event: dict[str, Any] = {
        "event_id": f"{fid}-{op}-{ts}-{chosen}",
        "feedback_id": fid,
        "op": op,
        "request_id": request,
        "timestamp_ms": ts,
        "source": source,
        **extra,
    }
    if op == "CREATE":
        event |= {"key": "preference", "kind": "PAIRWISE"}
    if outcome is not None:
        event |= {"outcome": outcome, "chosen_id": chosen, "rejected_id": rejected}
    return event


USER = {"type": "APP_USER", "source_id": "u1"}


def test_updates_and_deletes_are_resolved(tmp_path: Path) -> None:
    log = tmp_path / "log"
    writer = SegmentWriter(log, partition=0)
    requests = [f"r{i}" for i in range(6)]
    writer.commit(
        inferences=[_inference(r) for r in requests],
        feedback=[
            _pairwise("f1", "r0", "a", USER),
            # an UPDATE carries only what changed: the choice flips, kind and source are kept
            _pairwise("f1", "r0", "b", None, ts=START_MS + 5000, op="UPDATE", outcome="PREFERRED"),
            _pairwise("f2", "r1", "a", USER),
            _pairwise("f2", "r1", "a", None, ts=START_MS + 5000, op="DELETE", outcome=None),
            _pairwise("f4", "r3", "a", USER, outcome="TIE"),
            # written before its CREATE (lower offset) but later in event time: it still wins
            _pairwise("f5", "r4", "b", None, ts=START_MS + 9000, op="UPDATE"),
        ],
    )
    writer.commit(
        feedback=[
            _pairwise("f3", "r2", "a", USER),
            _pairwise("f3", "r2", "a", None, ts=START_MS + 2000, op="DELETE", outcome=None),
            _pairwise("f3", "r2", "b", USER, ts=START_MS + 3000),  # created again after the delete
            _pairwise("f4", "r3", "a", None, ts=START_MS + 4000, op="UPDATE", outcome=None, comment="unsure"),
            _pairwise("f5", "r4", "a", USER, ts=START_MS + 1000),
            # same event time: the later offset wins
            _pairwise("f6", "r5", "a", USER, ts=START_MS + 7000),
            _pairwise("f6", "r5", "b", None, ts=START_MS + 7000, op="UPDATE"),
        ]
    )
    data = load_log(log)
    live = {
        row["feedback_id"]: row
        for row in data.rows(
            "SELECT feedback_id, chosen_id, outcome, source_type, comment, kind FROM live ORDER BY feedback_id"
        )
    }
    assert set(live) == {"f1", "f3", "f4", "f5", "f6"}
    assert live["f1"]["chosen_id"] == "b" and live["f1"]["source_type"] == "APP_USER"
    assert live["f1"]["kind"] == "PAIRWISE"
    assert live["f3"]["chosen_id"] == "b"
    assert live["f4"]["outcome"] == "TIE" and live["f4"]["comment"] == "unsure"
    assert live["f5"]["chosen_id"] == "b"
    assert live["f6"]["chosen_id"] == "b"
    data.con.close()

    report = build_report(log, tmp_path / "out", FAST)
    rows = {row["model"]: row for row in report.ratings["table"]}
    # b (model m-y) won f1, f3, f5, f6; f4 is a tie; f2 is gone
    assert rows["m-y:1"]["wins"] == 4 and rows["m-y:1"]["ties"] == 1 and rows["m-y:1"]["losses"] == 0
    assert rows["m-x:1"]["wins"] == 0 and rows["m-x:1"]["comparisons"] == 5
    health = report.health
    assert health["feedback_deleted"] == 1
    assert health["feedback_live"] == 5
    assert health["feedback_events"] == {"CREATE": 7, "UPDATE": 4, "DELETE": 2}
    assert health["coverage"] == {"inferences": 6, "with_feedback": 5, "share": pytest.approx(5 / 6)}


def test_agreement_matches_hand_computed_kappa(tmp_path: Path) -> None:
    human = {"type": "HUMAN_ANNOTATOR", "source_id": "h"}
    judge = {"type": "MODEL_JUDGE", "model": "judge", "model_version": "1"}
    human_says = "aaaaaabbbb"  # items 0-9: which candidate wins
    judge_says = "aaaaabbbba"  # agrees on 8 of 10
    feedback = []
    for i, (h, j) in enumerate(zip(human_says, judge_says, strict=True)):
        feedback.append(_pairwise(f"h{i}", f"r{i}", h, human))
        feedback.append(_pairwise(f"j{i}", f"r{i}", j, judge))
    for i in range(4):  # a reward model scores both candidates of items 0-3: a higher
        for cid, score in (("a", 0.9), ("b", 0.1)):
            feedback.append(
                {
                    "event_id": f"s{i}{cid}",
                    "feedback_id": f"s{i}{cid}",
                    "op": "CREATE",
                    "request_id": f"r{i}",
                    "timestamp_ms": START_MS + 500,
                    "key": "reward",
                    "kind": "SCORE",
                    "candidate_id": cid,
                    "score": score,
                    "source": {"type": "REWARD_MODEL", "model": "rm"},
                }
            )
    first, second = "aaabbb", "aabbba"  # two annotators on items 10-15: agree on 4 of 6
    for i, (x, y) in enumerate(zip(first, second, strict=True), start=10):
        feedback.append(_pairwise(f"x{i}", f"r{i}", x, {"type": "HUMAN_ANNOTATOR", "source_id": "ann-1"}))
        feedback.append(_pairwise(f"y{i}", f"r{i}", y, {"type": "HUMAN_ANNOTATOR", "source_id": "ann-2"}))
    SegmentWriter(tmp_path / "log").commit(inferences=[_inference(f"r{i}") for i in range(16)], feedback=feedback)

    agreement = build_report(tmp_path / "log", tmp_path / "out", FAST).agreement
    pairs = {(r["source_a"], r["source_b"]): r for r in agreement["between_sources"]}
    human_judge = pairs[("HUMAN_ANNOTATOR", "MODEL_JUDGE")]
    assert human_judge["items"] == 10
    assert human_judge["agreement"] == pytest.approx(0.8)
    # p_o = 0.8; p_e = 0.6 * 0.6 + 0.4 * 0.4 = 0.52; kappa = 0.28 / 0.48
    assert human_judge["kappa"] == pytest.approx(0.28 / 0.48)
    human_rm = pairs[("HUMAN_ANNOTATOR", "REWARD_MODEL")]
    assert human_rm["items"] == 4 and human_rm["agreement"] == 1.0
    assert human_rm["kappa"] is None  # one category only: chance agreement is 1, kappa undefined
    raters = {r["source_type"]: r for r in agreement["between_raters"]}["HUMAN_ANNOTATOR"]
    assert raters["items"] == 6 and raters["raters"] == 2
    assert raters["agreement"] == pytest.approx(4 / 6)
    # both raters choose "first" half the time: p_e = 0.5, kappa = (2/3 - 1/2) / (1/2)
    assert raters["kappa"] == pytest.approx(1 / 3)
    assert raters["fleiss_kappa"] == pytest.approx(1 / 3)


# --------------------------------------------------------------------------- output
class _PlotFinder(HTMLParser):
    """Ids of elements that contain an <svg>, and every external reference."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str | None] = []
        self.with_svg: set[str] = set()
        self.external: list[str] = []

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "col", "wbr", "source"})

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href", "xlink:href"):
            if re.match(r"^\s*([a-z]+:)?//", values.get(name) or "") or (values.get(name) or "").startswith("http"):
                self.external.append(f"{tag} {name}={values[name]}")
        if tag == "svg":
            self.with_svg.update(i for i in self.stack if i)
        if tag in ("link", "script") or tag == "img":
            self.external.append(tag)
        if tag not in self.VOID:
            self.stack.append(values.get("id"))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if self.stack and tag not in self.VOID:
            self.stack.pop()


def test_html_has_every_plot_and_renders_in_headless_chromium(planted: BuildPlanted, tmp_path: Path) -> None:
    report = planted()
    page = report.html_path.read_text(encoding="utf-8")
    finder = _PlotFinder()
    finder.feed(page)
    assert set(PLOT_IDS) <= finder.with_svg, set(PLOT_IDS) - finder.with_svg
    assert finder.external == []
    assert "@import" not in page
    assert not re.search(r"url\(\s*['\"]?(?!#)", page)  # only references inside the page

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install it (apt-get install -y chromium); this test never skips")
    screenshot = tmp_path / "report.png"
    result = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            f"--screenshot={screenshot}",
            "--window-size=1280,4000",
            report.html_path.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert screenshot.exists(), result.stderr[-2000:]
    assert screenshot.stat().st_size > 50_000
    pixels = matplotlib.image.imread(screenshot)
    assert pixels.shape[:2] == (4000, 1280)
    rows_with_ink = np.mean(pixels[:, :, :3].std(axis=1).mean(axis=1) > 0.01)
    assert rows_with_ink > 0.5  # most of the page height shows text, tables or plots


def test_json_holds_the_numbers_of_the_page(planted: BuildPlanted) -> None:
    report = planted()
    data = json.loads(report.json_path.read_text(encoding="utf-8"))
    assert data == json.loads(json.dumps(report.data))
    assert set(data) >= {"ratings", "bias", "agreement", "health", "inputs", "plots"}
    page = report.html_path.read_text(encoding="utf-8")
    for row in data["ratings"]["table"]:
        assert fmt(row["bt_rating"]) in page
        assert fmt(row["win_rate"]) in page
    assert f"{data['bias']['overall']['position']['first_shown_win_rate']['value']:.3f}" in page
    assert data["health"]["orphans"]["total"] == 3
    assert data["health"]["dead_letters"] is None and data["health"]["compile_drop_counts"] is None
    assert "not available" in page


def test_optional_inputs_and_the_command_line(tmp_path: Path, run_cli: Any) -> None:
    log = tmp_path / "home" / "log"
    write_planted_log(log, models={"a:1": 0.5, "b:1": -0.5}, n_requests=300, seed=3, orphans=2)
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"consumer": {"dead_letters": 7, "joined": 100}}))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"counts": {"drops": {"empty_text": 4, "duplicate": 2}}}))
    result = run_cli(
        "report",
        "--bootstrap-rounds",
        "20",
        "--dead-letters",
        str(metrics),
        "--manifest",
        str(manifest),
        "--per-source",
        env={"PREFPAIR_HOME": str(tmp_path / "home")},
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "home" / "report"
    assert str(out / "report.html") in result.stdout
    data = json.loads((out / "report.json").read_text())
    assert data["health"]["dead_letters"] == 7
    assert data["health"]["compile_drop_counts"] == {"empty_text": 4, "duplicate": 2}
    assert data["health"]["orphans"]["total"] == 2
    assert data["ratings_per_source"] is not None
    assert not list(out.glob(".tmp-*"))

    counted = run_cli(
        "report",
        "--log-dir",
        str(log),
        "--out",
        str(tmp_path / "o2"),
        "--bootstrap-rounds",
        "0",
        "--dead-letters",
        "12",
    )
    assert counted.returncode == 0, counted.stderr
    assert json.loads((tmp_path / "o2" / "report.json").read_text())["health"]["dead_letters"] == 12

    empty = run_cli("report", "--log-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "o3"))
    assert empty.returncode == 2
    assert "nothing to report" in empty.stderr and "Traceback" not in empty.stderr
    bad = run_cli(
        "report", "--log-dir", str(log), "--out", str(tmp_path / "o4"), "--manifest", str(tmp_path / "missing.json")
    )
    assert bad.returncode == 2 and "manifest" in bad.stderr and "Traceback" not in bad.stderr


def test_empty_log_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "log" / "partition=00000" / ".tmp-seg-i0-0-f0-0").mkdir(parents=True)  # uncommitted only
    with pytest.raises(EmptyLogError) as caught:
        build_report(tmp_path / "log", tmp_path / "out", FAST)
    assert caught.value.path == tmp_path / "log"
    assert not (tmp_path / "out" / "report.html").exists()


def test_log_without_judgments_still_reports(tmp_path: Path) -> None:
    SegmentWriter(tmp_path / "log").commit(inferences=[_inference("r0"), _inference("r1")])
    report = build_report(tmp_path / "log", tmp_path / "out", FAST)
    assert report.ratings["table"] == []
    assert report.health["coverage"]["share"] == 0.0
    finder = _PlotFinder()
    finder.feed(report.html_path.read_text(encoding="utf-8"))
    assert set(PLOT_IDS) <= finder.with_svg


def test_chromium_is_installed_where_the_tests_run() -> None:
    assert shutil.which("chromium") or CHROMIUM.exists(), "apt-get install -y chromium"


def test_report_over_a_compiled_dataset(planted: BuildPlanted, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    models = list(PLANTED)
    lines = []
    for i in range(1500):
        a, b = rng.choice(len(models), size=2, replace=False)
        a_wins = rng.random() < 1 / (1 + np.exp(PLANTED[models[b]] - PLANTED[models[a]]))
        win, lose = (a, b) if a_wins else (b, a)
        lines.append(
            json.dumps(
                {
                    "prompt": f"q{i}",
                    "chosen": "x" * int(rng.integers(50, 500)),
                    "rejected": "y" * int(rng.integers(50, 500)),
                    "chosen_model": models[win],
                    "rejected_model": models[lose],
                    "request_id": f"r{i}",
                    "source_type": "APP_USER",
                }
            )
        )
    (tmp_path / "data" / "trl").mkdir(parents=True)
    (tmp_path / "data" / "trl" / "train.jsonl").write_text("\n".join(lines) + "\n")
    report = build_report(
        tmp_path / "nowhere", tmp_path / "out", FAST.model_copy(update={"dataset": tmp_path / "data"})
    )
    ranked = [r["model"] for r in sorted(report.ratings["table"], key=lambda r: r["bt_rank"])]
    assert ranked == PLANTED_ORDER
    assert report.health is None
    assert not _excludes(report.bias["overall"]["length"]["longer_win_rate"], 0.5)
    finder = _PlotFinder()
    finder.feed(report.html_path.read_text(encoding="utf-8"))
    assert set(PLOT_IDS) <= finder.with_svg
    with pytest.raises(EmptyLogError):
        build_report(tmp_path, tmp_path / "out2", FAST.model_copy(update={"dataset": tmp_path / "out"}))
