"""``prefpair report`` on synthetic logs with a planted truth, and on hand-built segments.

No broker needed: simulated traffic is written as committed segments by prefpair.simulate,
the way the consumer writes them; hand-built logs come from its LogBuilder. The HTML is
rendered by a real headless Chromium.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest

from prefpair.consumers import ConsumerConfig
from prefpair.report import EmptyLogError, Report, ReportConfig, build_report
from prefpair.report.analyses import position_check, rating_pairs
from prefpair.report.load import load_log
from prefpair.report.render import PLOT_IDS, fmt
from prefpair.report.stats import ELO_PER_LOGIT, bootstrap_bradley_terry
from prefpair.simulate import START_MS, LogBuilder, LogWritten, Traffic, TrafficSpec, write_log

CHROMIUM = Path("/usr/bin/chromium")
PLANTED = {"chat-small:1": -0.9, "chat-small:2": -0.3, "chat-large:1": 0.3, "chat-large:2": 0.9}
PLANTED_ORDER = sorted(PLANTED, key=lambda m: -PLANTED[m])
FAST = ReportConfig(bootstrap_rounds=60, seed=1)

BuildPlanted = Callable[..., Report]
SEGMENTS = ConsumerConfig(flush_rows=2000)  # a few segments per partition, as a consumer cuts them


def write_planted_log(log_dir: Path, **spec: Any) -> LogWritten:
    """Simulated traffic with a planted truth (``spec``: TrafficSpec fields), over two partitions."""
    return write_log(Traffic(TrafficSpec(**spec)), log_dir, partitions=2, config=SEGMENTS)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> BuildPlanted:
    """Build (once per argument set) a report over a planted log (one log per planted truth;
    ``log`` holds further fields of the TrafficSpec)."""
    logs: dict[tuple[Any, ...], Path] = {}
    reports: dict[tuple[Any, ...], Report] = {}

    def build(
        position_bias: float = 0.0,
        length_bias: float = 0.0,
        seed: int = 11,
        log: dict[str, Any] | None = None,
        **config: Any,
    ) -> Report:
        truth = (position_bias, length_bias, seed, repr(sorted((log or {}).items())))
        if truth not in logs:
            logs[truth] = tmp_path_factory.mktemp("planted") / "log"
            write_planted_log(
                logs[truth],
                models=PLANTED,
                requests=3000,
                position_bias=position_bias,
                length_bias=length_bias,
                seed=seed,
                **(log or {}),
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
    assert bias["overall"]["chosen_length_trend"]["chosen_longer_share"] > 0.5


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


Events = Sequence[dict[str, Any]]


def _commit(log: LogBuilder, inferences: Events = (), feedback: Events = ()) -> None:
    """One segment holding these events, inferences first, each at the next offset."""
    for event in inferences:
        log.inference_event(event)
    for event in feedback:
        log.feedback_event(event)
    log.commit()


def test_updates_and_deletes_are_resolved(tmp_path: Path) -> None:
    log = tmp_path / "log"
    writer = LogBuilder(log, partition=0)
    requests = [f"r{i}" for i in range(6)]
    _commit(
        writer,
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
    _commit(
        writer,
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
    _commit(LogBuilder(tmp_path / "log"), inferences=[_inference(f"r{i}") for i in range(16)], feedback=feedback)

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
        assert fmt(row["bt_rating"], 1) in page
        assert fmt(row["win_rate"]) in page
    assert f"{data['bias']['overall']['position']['first_shown_win_rate']['value']:.3f}" in page
    assert data["health"]["orphans"]["total"] == 3
    assert data["health"]["dead_letters"] is None and data["health"]["compile_drop_counts"] is None
    assert "not available" in page


def test_optional_inputs_and_the_command_line(tmp_path: Path, run_cli: Any) -> None:
    log = tmp_path / "home" / "log"
    write_planted_log(log, models={"a:1": 0.5, "b:1": -0.5}, requests=300, seed=3, orphans=2)
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
        "--score-pairs",
        "--confidence",
        "0.9",
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
    assert data["ratings"]["confidence"] == data["bias"]["confidence"] == 0.9
    assert data["bias"]["overall"]["left_out"]["comparisons"] == 0  # --score-pairs: the reward model counts
    assert data["ratings"]["score_pairs"] is True
    assert "90 % interval" in (out / "report.html").read_text(encoding="utf-8")
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
    _commit(LogBuilder(tmp_path / "log"), inferences=[_inference("r0"), _inference("r1")])
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


# --------------------------------------------------------------------------- what the page shows
SVG = "{http://www.w3.org/2000/svg}"


class PlotView:
    """What one ``<figure id=...>`` of the page draws, read from its inline SVG: the panels (axes
    the renderer tags ``<plot>/panel/<key>``), the texts each shows (matplotlib writes every text
    it draws as paths beside a comment holding the text) and bar heights read off the geometry."""

    def __init__(self, page: str, plot_id: str) -> None:
        start = page.index(f'<figure id="{plot_id}">')
        end = page.index("</figure>", start)
        figure = page[start:end]
        svg = figure[figure.index("<svg") : figure.rindex("</svg>") + len("</svg>")]
        self.caption = re.sub(r"<[^>]+>", "", figure[figure.index("<figcaption>") :])
        self.caption = html.unescape(self.caption)
        parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
        parser.feed(svg)
        self.root = parser.close()
        self.plot_id = plot_id
        self.by_id = {el.get("id"): el for el in self.root.iter() if el.get("id")}

    @property
    def panels(self) -> list[str]:
        """Keys of the panels, in drawing order."""
        pattern = re.compile(rf"^{re.escape(self.plot_id)}/panel/([^/]+)$")
        return [m.group(1) for el in self.root.iter() if (m := pattern.match(el.get("id") or ""))]

    @staticmethod
    def _texts(element: ET.Element) -> list[str]:
        # matplotlib escapes &, < and > in these comments as in character data
        return [html.unescape(str(node.text).strip()) for node in element.iter() if node.tag is ET.Comment]

    def all_texts(self) -> list[str]:
        """Every text of the figure, panels and colour bars."""
        return self._texts(self.root)

    def texts(self, panel: str) -> list[str]:
        """Every text drawn in a panel (title, tick labels, legend, annotations), line by line."""
        return self._texts(self.by_id[f"{self.plot_id}/panel/{panel}"])

    def cell(self, panel: str, row: str, column: str) -> list[str]:
        """The lines of text drawn in one cell of a matrix plot."""
        return self._texts(self.by_id[f"{self.plot_id}/panel/{panel}/cell/{row}/{column}"])

    def _box(self, gid: str) -> tuple[float, float]:
        """Top and bottom (SVG y grows downwards) of the rectangle tagged ``gid``."""
        path = self.by_id[gid].find(f"{SVG}path")
        assert path is not None, gid
        numbers = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", path.get("d") or "")]
        ys = numbers[1::2]
        return min(ys), max(ys)

    def bars(self, panel: str) -> dict[str, float]:
        """Bar key -> height in data units, for a panel whose y axis runs from 0 to 1."""
        prefix = f"{self.plot_id}/panel/{panel}/bar/"
        frame_top, frame_bottom = self._box(f"{self.plot_id}/panel/{panel}/frame")
        out = {}
        for gid in self.by_id:
            if gid.startswith(prefix):
                top, _ = self._box(gid)
                out[gid[len(prefix) :]] = (frame_bottom - top) / (frame_bottom - frame_top)
        return out


class _Tables(HTMLParser):
    """Every table of a page: its headings, and its rows as (text, is a text cell) per cell."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, Any]] = []
        self.row: list[tuple[str, bool]] = []
        self.cell: list[str] | None = None
        self.cell_is_text = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append({"head": [], "rows": []})
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = []
            self.cell_is_text = "text" in (dict(attrs).get("class") or "").split()

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self.row:
            self.tables[-1]["rows"].append(self.row)
        elif tag == "th" and self.cell is not None:
            self.tables[-1]["head"].append("".join(self.cell).strip())
            self.cell = None
        elif tag == "td" and self.cell is not None:
            self.row.append(("".join(self.cell).strip(), self.cell_is_text))
            self.cell = None


def _tables(page: str) -> list[dict[str, Any]]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def _column(tables: list[dict[str, Any]], heading: str, first_heading: str | None = None) -> list[str]:
    """Cells under ``heading`` in the first table that has it (and starts with ``first_heading``)."""
    for t in tables:
        if heading in t["head"] and (first_heading is None or t["head"][0] == first_heading):
            index = t["head"].index(heading)
            return [row[index][0] for row in t["rows"]]
    raise AssertionError(f"no table with a column {heading!r}")


def _rows_by_first_cell(tables: list[dict[str, Any]], heading: str) -> dict[str, dict[str, str]]:
    """Rows of the first table whose columns include ``heading``, keyed by their first cell."""
    for t in tables:
        if heading in t["head"]:
            return {row[0][0]: {h: cell[0] for h, cell in zip(t["head"], row, strict=True)} for row in t["rows"]}
    raise AssertionError(f"no table with a column {heading!r}")


def test_length_bias_of_one_source_type_has_its_own_panel_and_the_page_says_what_rows_leave_out(
    planted: BuildPlanted,
) -> None:
    """Planted: only the reward model prefers longer answers. The overall rows leave score pairs
    out by default; the page must say so, and the length plot must show the reward model."""
    report = planted(log={"length_bias_by_source": {"REWARD_MODEL": 1.0}})
    bias = report.bias
    per_source, overall = bias["per_source"], bias["overall"]
    rm = per_source["REWARD_MODEL"]
    assert rm["length"]["controlled_logit"]["ci_low"] > 0.5
    assert rm["length"]["longer_win_rate"]["ci_low"] > 0.55
    assert rm["by_origin"] == {"score": rm["comparisons"]}
    for source in ("APP_USER", "HUMAN_ANNOTATOR"):
        assert not _excludes(per_source[source]["length"]["controlled_logit"], 0.0), source
    assert not _excludes(overall["length"]["controlled_logit"], 0.0)
    assert overall["left_out"] == {
        "comparisons": rm["comparisons"],
        "by_origin": {"score": rm["comparisons"]},
        "by_source": {"REWARD_MODEL": rm["comparisons"]},
    }
    assert overall["comparisons"] + rm["comparisons"] == sum(b["comparisons"] for b in per_source.values())

    page = report.html_path.read_text(encoding="utf-8")
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert "all judgments" not in text  # the old label claimed what the row did not hold
    assert (
        f"all sources except score pairs holds the {fmt(overall['by_origin']['pairwise'])} pairwise choices, "
        f"{fmt(overall['by_origin']['ranking'])} pairs from rankings of every source type; it leaves out "
        f"{fmt(rm['comparisons'])} pairs implied by two scores from REWARD_MODEL"
    ) in text
    assert f"REWARD_MODEL {fmt(rm['comparisons'])} pairs implied by two scores" in text
    tables = _tables(page)
    for heading in ("first-shown win rate [95 % interval]", "longer-answer win rate [95 % interval]"):
        rows = _rows_by_first_cell(tables, heading)
        assert list(rows) == ["all sources except score pairs", "APP_USER", "HUMAN_ANNOTATOR", "MODEL_JUDGE",
                              "REWARD_MODEL"]
    assert _rows_by_first_cell(tables, "longer-answer win rate [95 % interval]")["REWARD_MODEL"]["pairs"] == fmt(
        rm["length"]["longer_win_rate"]["n"]
    )

    plot = PlotView(page, "plot-length")
    assert plot.panels == ["overall", "APP_USER", "HUMAN_ANNOTATOR", "MODEL_JUDGE", "REWARD_MODEL"]
    assert "leaves out" in plot.caption and "REWARD_MODEL" in plot.caption
    groups = {"overall": overall, **per_source}
    for panel in plot.panels:
        label = "all sources except score pairs" if panel == "overall" else panel
        shown = plot.texts(panel)
        assert f"{label}: {groups[panel]['length']['longer_win_rate']['n']:,} pairs" in shown, shown  # its title
        buckets = groups[panel]["length"]["by_length_ratio"]
        for bucket in buckets:
            assert bucket["ratio_bucket"] in shown
        bars = plot.bars(panel)
        assert bars == pytest.approx({str(i): b["value"] for i, b in enumerate(buckets)}, abs=0.005), panel
    rm_bars = plot.bars("REWARD_MODEL")
    assert rm_bars["4"] > 0.75 and rm_bars["4"] > rm_bars["0"] + 0.2  # what the table said, now visible
    assert all(0.4 < v < 0.6 for v in plot.bars("overall").values())

    trend = PlotView(page, "plot-length-trend")
    assert trend.panels == ["overall", "APP_USER", "HUMAN_ANNOTATOR", "MODEL_JUDGE", "REWARD_MODEL"]
    assert "chosen" in trend.texts("REWARD_MODEL") and "rejected" in trend.texts("REWARD_MODEL")

    position = PlotView(page, "plot-position")
    assert position.panels == ["main"]
    assert set(position.bars("main")) == {"overall", "APP_USER", "HUMAN_ANNOTATOR", "MODEL_JUDGE", "REWARD_MODEL"}
    assert position.bars("main")["REWARD_MODEL"] == pytest.approx(
        rm["position"]["first_shown_win_rate"]["value"], abs=0.005
    )
    assert position.texts("main")[:2] == ["all sources", "except score pairs"]  # the first bar's label


def test_with_score_pairs_the_overall_rows_leave_nothing_out(planted: BuildPlanted) -> None:
    report = planted(log={"length_bias_by_source": {"REWARD_MODEL": 1.0}}, score_pairs_in_ratings=True)
    overall, per_source = report.bias["overall"], report.bias["per_source"]
    assert overall["left_out"]["comparisons"] == 0
    assert overall["comparisons"] == sum(b["comparisons"] for b in per_source.values())
    assert overall["length"]["controlled_logit"]["ci_low"] > 0  # the reward model's bias now shows overall
    text = html.unescape(re.sub(r"<[^>]+>", "", report.html_path.read_text(encoding="utf-8")))
    assert "all sources holds the" in text and "it leaves nothing out" in text
    assert "except score pairs" not in text
    assert "pairs implied by two scores of one source count too" in text


def _annotated(fid: str, request: str, chosen: str, rater: str) -> dict[str, Any]:
    return _pairwise(fid, request, chosen, {"type": "HUMAN_ANNOTATOR", "source_id": rater})


def test_agreement_plot_draws_what_has_data_and_marks_the_rest_no_data(tmp_path: Path) -> None:
    """Users and annotators never judge the same request; two annotators share ten; a judge
    shares one request with a user. The plot must show the annotators' kappa on the diagonal,
    "no data" where nothing was shared, and no invented value anywhere."""
    feedback = [_pairwise(f"u{i}", f"r{i}", "a", USER) for i in range(10)]
    feedback.append(_pairwise("j0", "r0", "a", {"type": "MODEL_JUDGE", "model": "judge"}))
    first, second = "aaaaabbbbb", "aaaabbbbba"  # agree on 8 of 10, each says "a" half the time
    for i, (x, y) in enumerate(zip(first, second, strict=True), start=10):
        feedback.append(_annotated(f"x{i}", f"r{i}", x, "ann-1"))
        feedback.append(_annotated(f"y{i}", f"r{i}", y, "ann-2"))
    _commit(LogBuilder(tmp_path / "log"), inferences=[_inference(f"r{i}") for i in range(20)], feedback=feedback)
    report = build_report(tmp_path / "log", tmp_path / "out", FAST)

    agreement = report.agreement
    pairs = {(r["source_a"], r["source_b"]): r for r in agreement["between_sources"]}
    assert pairs[("APP_USER", "HUMAN_ANNOTATOR")] == {
        "source_a": "APP_USER", "source_b": "HUMAN_ANNOTATOR", "items": 0, "agreement": None, "kappa": None
    }
    assert pairs[("APP_USER", "MODEL_JUDGE")]["items"] == 1
    assert pairs[("APP_USER", "MODEL_JUDGE")]["kappa"] is None  # one verdict: chance agreement is 1
    raters = {r["source_type"]: r for r in agreement["between_raters"]}
    assert raters["HUMAN_ANNOTATOR"]["items"] == 10
    assert raters["HUMAN_ANNOTATOR"]["kappa"] == pytest.approx(0.6)  # p_o 0.8, p_e 0.5
    assert raters["APP_USER"]["items"] == 0

    plot = PlotView(report.html_path.read_text(encoding="utf-8"), "plot-agreement")
    assert plot.panels == ["main"]
    assert plot.cell("main", "HUMAN_ANNOTATOR", "HUMAN_ANNOTATOR") == ["between raters", "kappa 0.60", "n=10"]
    assert plot.cell("main", "APP_USER", "MODEL_JUDGE") == ["kappa undefined", "agree 1.00", "n=1"]
    assert plot.cell("main", "MODEL_JUDGE", "APP_USER") == ["kappa undefined", "agree 1.00", "n=1"]
    for row, column in (
        ("APP_USER", "HUMAN_ANNOTATOR"),
        ("HUMAN_ANNOTATOR", "APP_USER"),
        ("HUMAN_ANNOTATOR", "MODEL_JUDGE"),
        ("APP_USER", "APP_USER"),  # one user per request: no two raters of a pair
        ("MODEL_JUDGE", "MODEL_JUDGE"),
    ):
        assert plot.cell("main", row, column) == ["no data"], (row, column)
    shown = plot.texts("main")
    assert not any("1.00" in line and "agree" not in line for line in shown), shown  # no invented diagonal
    assert {"APP_USER", "HUMAN_ANNOTATOR", "MODEL_JUDGE"} <= set(shown)  # the axes name every source type
    assert "Cohen's kappa" in plot.all_texts()  # the colour bar's label
    assert "no data" in plot.caption and "between raters of one source type" in plot.caption


def test_planted_disjoint_sources_leave_only_annotator_agreement_to_plot(tmp_path: Path) -> None:
    """Users and annotators judge disjoint requests; a second annotator (who often copies the
    first) ranks half the annotated ones. Only the annotators' agreement has data."""
    write_planted_log(
        tmp_path / "log",
        models=PLANTED,
        requests=1000,
        seed=4,
        source_shares={"APP_USER": 0.5, "HUMAN_ANNOTATOR": 0.5},
        disjoint_sources=True,
        second_annotator_share=0.5,
        annotator_copy_share=0.5,
    )
    report = build_report(tmp_path / "log", tmp_path / "out", FAST)
    [between] = report.agreement["between_sources"]
    assert (between["source_a"], between["source_b"], between["items"]) == ("APP_USER", "HUMAN_ANNOTATOR", 0)
    annotators = {r["source_type"]: r for r in report.agreement["between_raters"]}["HUMAN_ANNOTATOR"]
    assert annotators["kappa"] > 0.4  # half copy, the rest agree through the planted strengths
    plot = PlotView(report.html_path.read_text(encoding="utf-8"), "plot-agreement")
    assert plot.cell("main", "HUMAN_ANNOTATOR", "HUMAN_ANNOTATOR") == [
        "between raters",
        f"kappa {annotators['kappa']:.2f}",
        f"n={annotators['items']:,}",
    ]
    for row, column in (("APP_USER", "HUMAN_ANNOTATOR"), ("HUMAN_ANNOTATOR", "APP_USER"), ("APP_USER", "APP_USER")):
        assert plot.cell("main", row, column) == ["no data"], (row, column)


def test_agreement_plot_without_any_shared_pair_says_so(tmp_path: Path) -> None:
    _commit(
        LogBuilder(tmp_path / "log"),
        inferences=[_inference(f"r{i}") for i in range(4)],
        feedback=[_pairwise(f"u{i}", f"r{i}", "a", USER) for i in range(4)],
    )
    page = build_report(tmp_path / "log", tmp_path / "out", FAST).html_path.read_text(encoding="utf-8")
    plot = PlotView(page, "plot-agreement")
    assert plot.texts("main") == ["no pair of candidates judged by two source types or two raters"]


NUMBER = re.compile(r"-?\d[\d,]*(?:\.(\d+))?")


def test_every_table_column_has_one_number_format(planted: BuildPlanted) -> None:
    """Ratings straddle 1000 on the Elo scale: the column keeps its decimals on both sides."""
    page = planted().html_path.read_text(encoding="utf-8")
    tables = _tables(page)
    assert len(tables) > 10
    for t in tables:
        for index, heading in enumerate(t["head"]):
            decimals = {
                len(match.group(1) or "")
                for row in t["rows"]
                if index < len(row) and not row[index][1]
                for match in NUMBER.finditer(row[index][0])
            }
            assert len(decimals) <= 1, (heading, t["head"], decimals, [r[index][0] for r in t["rows"]])
    ratings = _column(tables, "Bradley-Terry")
    values = [float(v.replace(",", "")) for v in ratings]
    assert min(values) < 1000 < max(values)
    assert all(re.fullmatch(r"\d{1,3}(,\d{3})*\.\d", v) for v in ratings), ratings
    elo = _column(tables, "online Elo")
    assert all(re.fullmatch(r"\d{1,3}(,\d{3})*\.\d", v) for v in elo), elo
    assert fmt(1135.0, 1) == "1,135.0" and fmt(973.029, 1) == "973.0" and fmt(973.029) == "973.029"


def test_intervals_use_the_configured_confidence(planted: BuildPlanted) -> None:
    wide, narrow = planted(), planted(confidence=0.8)
    assert narrow.bias["confidence"] == 0.8
    page = narrow.html_path.read_text(encoding="utf-8")
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert "95 %" not in text and "with a 80 % interval clustered by request" in text
    assert "Intervals: 80 % bootstrap" in text
    assert any("first-shown win rate [80 % interval]" in t["head"] for t in _tables(page))
    assert "80 % interval" in PlotView(page, "plot-position").texts("main")
    assert "80 % intervals" in PlotView(page, "plot-length").caption
    z80, z95 = 1.2815515655446004, 1.959963984540054
    for group in ("overall", "APP_USER"):
        block_w = wide.bias["overall"] if group == "overall" else wide.bias["per_source"][group]
        block_n = narrow.bias["overall"] if group == "overall" else narrow.bias["per_source"][group]
        w, n = block_w["position"]["first_shown_win_rate"], block_n["position"]["first_shown_win_rate"]
        assert (n["ci_high"] - n["ci_low"]) / (w["ci_high"] - w["ci_low"]) == pytest.approx(z80 / z95, rel=0.01)


def test_bootstrap_resamples_requests_so_correlated_raters_add_no_false_precision(tmp_path: Path) -> None:
    """Every request is ranked by four annotators who copy the first one: four verdicts, one
    piece of evidence. Resampling judgments (the naive bootstrap) would shrink the interval by
    about half; resampling requests keeps it as wide as with one annotator."""
    models = {"a:1": -0.5, "b:1": 0.0, "c:1": 0.5}
    config = ReportConfig(bootstrap_rounds=200, seed=1)
    widths: dict[int, dict[str, float]] = {}
    for annotators in (1, 4):
        log = tmp_path / f"log-{annotators}"
        write_planted_log(
            log,
            models=models,
            requests=600,
            seed=5,
            source_shares={"HUMAN_ANNOTATOR": 1.0},
            second_annotator_share=1.0,
            annotators_per_item=annotators,
            annotator_copy_share=1.0,
        )
        report = build_report(log, tmp_path / f"out-{annotators}", config)
        widths[annotators] = {r["model"]: r["bt_ci_high"] - r["bt_ci_low"] for r in report.ratings["table"]}
        page = report.html_path.read_text(encoding="utf-8")
        for row in report.ratings["table"]:  # the page shows the interval report.json holds
            assert f"{fmt(row['bt_ci_low'], 1)} to {fmt(row['bt_ci_high'], 1)}" in page
        assert "resample whole requests" in page
    copied = report  # four annotators per request (a few deleted their ranking)
    assert 3.5 * copied.ratings["items"] < copied.ratings["judgments"] <= 4 * copied.ratings["items"]

    data = load_log(tmp_path / "log-4")
    data.con.close()
    pairs = rating_pairs(data.comparisons, config)
    index = {m: i for i, m in enumerate(copied.ratings["models"])}
    a = np.array([index[m] for m in pairs.a_model])
    b = np.array([index[m] for m in pairs.b_model])
    naive = bootstrap_bradley_terry(
        a, b, pairs.score_a, pairs.judgment, len(index), 200, np.random.default_rng(1), config.bt_prior
    )
    naive_low, naive_high = np.percentile(ELO_PER_LOGIT * naive, [2.5, 97.5], axis=0)
    for model, i in index.items():
        naive_width = naive_high[i] - naive_low[i]
        assert widths[4][model] > 1.5 * naive_width, (model, widths[4][model], naive_width)
        assert 0.75 < widths[4][model] / widths[1][model] < 1.33, (model, widths)

    position = copied.bias["overall"]["position"]["first_shown_win_rate"]
    everything = data.comparisons  # rankings only: the overall group of the bias checks holds them all
    naive_position = position_check(dataclasses.replace(everything, item=everything.judgment), 1.959963984540054)
    naive_position = naive_position["first_shown_win_rate"]
    assert naive_position["value"] == pytest.approx(position["value"])
    naive_width = naive_position["ci_high"] - naive_position["ci_low"]
    assert position["ci_high"] - position["ci_low"] > 1.5 * naive_width


def test_a_dataset_of_several_formats_counts_each_pair_once(tmp_path: Path) -> None:
    """A compile writes the same pairs once per format: the report reads one format's folder."""
    from prefpair.report.dataset import load_dataset

    pairs = [{"pair_id": f"p{i}", "chosen_model": "a", "rejected_model": "b", "request_id": f"r{i}"} for i in range(40)]
    formats = {
        "openai/train.meta.jsonl": [{"line": i + 1, **p} for i, p in enumerate(pairs)],  # models, no answers
        "trl/train.jsonl": [{"prompt": "q", "chosen": "xx", "rejected": "yyy", **p} for p in pairs],
        "trl_conversational/train.jsonl": [{"prompt": [], "chosen": [{"role": "assistant", "content": "xx"}],
                                            "rejected": [{"role": "assistant", "content": "y"}], **p} for p in pairs],
    }  # fmt: skip
    for name, lines in formats.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "manifest.json").write_text("{}")
    data = load_dataset(tmp_path)
    assert len(data.comparisons.judgment) == len(pairs)
    assert list(data.comparisons.a_length) == [2.0] * len(pairs)  # a folder whose lines carry the answers
    (tmp_path / "manifest.json").unlink()  # not a compile's dataset: every file counts
    assert len(load_dataset(tmp_path).comparisons.judgment) == 3 * len(pairs)
