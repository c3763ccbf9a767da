"""The report as one self-contained HTML page: inline CSS, plots as inline SVG (matplotlib's
Agg backend, text drawn as paths), nothing fetched from anywhere.

Each plot sits in a ``<figure id="plot-...">``; :data:`PLOT_IDS` lists them all, and every one
is drawn even without data (it then says so), so the page always has the same shape.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

PLOT_IDS = (
    "plot-ratings",
    "plot-win-rate",
    "plot-position",
    "plot-length",
    "plot-length-trend",
    "plot-agreement",
    "plot-volume",
    "plot-latency",
)

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 1100px; padding: 24px; color: #1d2733; background: #fff; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #dde3ea; padding-bottom: 4px; margin-top: 2em; }
h3 { margin-top: 1.4em; }
.meta { color: #5a6b7d; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.88em; }
th, td { border: 1px solid #d5dce4; padding: 3px 8px; text-align: right; }
th { background: #f1f4f7; } td.text, th.text { text-align: left; }
figure { margin: 0.8em 0 1.6em; } figure svg { max-width: 100%; height: auto; }
figcaption { color: #5a6b7d; font-size: 0.88em; }
nav ol { columns: 2; } .na { color: #8a96a3; font-style: italic; }
.note { background: #f6f8fa; border-left: 3px solid #9fb3c8; padding: 6px 10px; font-size: 0.9em; }
"""


# --------------------------------------------------------------------------- formatting
def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return '<span class="na">n/a</span>'
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return '<span class="na">n/a</span>'
        if abs(value) >= 1000:
            return f"{value:,.1f}"
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def interval(row: dict[str, Any] | None, digits: int = 3) -> str:
    if not row or row.get("value") is None:
        return fmt(None)
    return f"{fmt(row['value'], digits)} [{fmt(row.get('ci_low'), digits)}, {fmt(row.get('ci_high'), digits)}]"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], text: Sequence[str] = ()) -> str:
    """An HTML table of ``rows`` with ``(key, heading)`` columns; ``text`` columns align left."""
    if not rows:
        return '<p class="na">no data</p>'
    head = "".join(f'<th class="{"text" if k in text else ""}">{html.escape(h)}</th>' for k, h in columns)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="{"text" if k in text else ""}">'
            f"{row[k] if isinstance(row.get(k), _Raw) else fmt(row.get(k))}</td>"
            for k, _ in columns
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class _Raw(str):
    """Cell content that is already HTML."""


def day(ms: float | int | None) -> str:
    if ms is None:
        return "n/a"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


# --------------------------------------------------------------------------- plots
def _svg(figure: Figure, plot_id: str) -> str:
    """The figure as an inline <svg> (no XML prolog, ids salted per plot so they never clash)."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": plot_id, "svg.fonttype": "path"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _empty(ax: Any, message: str = "no data") -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=13, color="#8a96a3", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def figure_html(plot_id: str, draw: Callable[[Any], None], caption: str, size: tuple[float, float] = (9, 4)) -> str:
    figure, ax = plt.subplots(figsize=size)
    draw(ax)
    return f'<figure id="{plot_id}">{_svg(figure, plot_id)}<figcaption>{html.escape(caption)}</figcaption></figure>'


def _ratings_plot(ratings: dict[str, Any]) -> Callable[[Any], None]:
    def draw(ax: Any) -> None:
        rows = ratings["table"]
        if not rows:
            return _empty(ax, "no comparisons between two different models")
        names = [r["model"] for r in rows][::-1]
        y = np.arange(len(names))
        for offset, key, label, color in (
            (0.15, "bt", "Bradley-Terry", "#1f6fb2"),
            (-0.15, "elo", "online Elo (bootstrap median)", "#d9822b"),
        ):
            center_key = "bt_rating" if key == "bt" else "elo_median"
            centers = np.array(
                [r[center_key] if r[center_key] is not None else r["elo"] for r in rows][::-1], dtype=float
            )
            low = np.array(
                [r[f"{key}_ci_low"] if r[f"{key}_ci_low"] is not None else np.nan for r in rows][::-1], dtype=float
            )
            high = np.array(
                [r[f"{key}_ci_high"] if r[f"{key}_ci_high"] is not None else np.nan for r in rows][::-1], dtype=float
            )
            ax.plot(centers, y + offset, "o", color=color, label=label)
            ok = ~np.isnan(low)
            ax.hlines(y[ok] + offset, low[ok], high[ok], color=color, linewidth=2)
        ax.set_yticks(y, names)
        ax.set_xlabel("rating (Elo scale, 1000 = average)")
        ax.axvline(1000, color="#aaa", linewidth=0.8, linestyle=":")
        ax.legend(loc="lower right")
        ax.grid(axis="x", alpha=0.3)
        return None

    return draw


def _matrix_plot(
    names: list[str], values: list[list[float | None]], label: str, vmin: float, vmax: float, cmap: str
) -> Callable[[Any], None]:
    def draw(ax: Any) -> None:
        if len(names) < 2:
            return _empty(ax)
        grid = np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)
        image = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_yticks(range(len(names)), names)
        for i in range(len(names)):
            for j in range(len(names)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=9)
        ax.figure.colorbar(image, ax=ax, label=label)
        return None

    return draw


def _bars_plot(labels: list[str], rows: list[dict[str, Any] | None], ylabel: str) -> Callable[[Any], None]:
    def draw(ax: Any) -> None:
        present = [(lab, r) for lab, r in zip(labels, rows, strict=True) if r and r.get("value") is not None]
        if not present:
            return _empty(ax)
        x = np.arange(len(present))
        values = np.array([r["value"] for _, r in present], dtype=float)
        low = np.array([r["ci_low"] if r.get("ci_low") is not None else r["value"] for _, r in present], dtype=float)
        high = np.array([r["ci_high"] if r.get("ci_high") is not None else r["value"] for _, r in present], dtype=float)
        ax.bar(x, values, color="#6c9bd2", width=0.6)
        ax.errorbar(x, values, yerr=[values - low, high - values], fmt="none", ecolor="#1d2733", capsize=4)
        ax.axhline(0.5, color="#c0392b", linestyle="--", linewidth=1, label="no bias (0.5)")
        ax.set_xticks(x, [f"{lab}\n(n={r['n']})" for lab, r in present], fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper right")
        return None

    return draw


def _trend_plot(trend: dict[str, Any]) -> Callable[[Any], None]:
    def draw(ax: Any) -> None:
        points = trend["points"]
        if not points:
            return _empty(ax)
        when = [datetime.fromtimestamp(p["start_ms"] / 1000, tz=UTC) for p in points]
        ax.plot(when, [p["chosen_mean_length"] for p in points], "o-", label="chosen", color="#2e8b57")
        ax.plot(when, [p["rejected_mean_length"] for p in points], "s--", label="rejected", color="#b03a2e")
        ax.set_ylabel("mean answer length (characters)")
        ax.legend()
        ax.figure.autofmt_xdate()
        ax.grid(alpha=0.3)
        return None

    return draw


def _volume_plot(volume: dict[str, Any]) -> Callable[[Any], None]:
    def draw(ax: Any) -> None:
        if not volume["by_source"]:
            return _empty(ax)
        when = [datetime.fromtimestamp(t / 1000, tz=UTC) for t in volume["bucket_start_ms"]]
        for source, counts in volume["by_source"].items():
            ax.plot(when, counts, marker=".", label=source)
        ax.set_ylabel("feedback events per bucket")
        ax.legend(fontsize=8)
        ax.figure.autofmt_xdate()
        ax.grid(alpha=0.3)
        return None

    return draw


def _latency_plot(histogram: dict[str, Any]) -> Callable[[Any], None]:
    def draw(ax: Any) -> None:
        edges, counts = histogram["edges_s"], histogram["counts"]
        if not counts:
            return _empty(ax, "no feedback with a positive latency")
        ax.stairs(counts, edges, fill=True, color="#6c9bd2")
        ax.set_xscale("log")
        ax.set_xlabel("feedback time - inference time (seconds, log scale)")
        ax.set_ylabel("feedback")
        return None

    return draw


# --------------------------------------------------------------------------- page
def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>'


def render_html(data: dict[str, Any]) -> str:
    """The whole page from the report's data dict."""
    ratings, bias, agreement, health = data["ratings"], data["bias"], data["agreement"], data["health"]
    inputs = data["inputs"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(data['title'])}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(data['title'])}</h1>",
        f'<p class="meta">Generated {html.escape(data["generated_at"])} '
        f"from <code>{html.escape(inputs['source'])}</code>"
        f" ({fmt(inputs['files'].get('inference', 0))} inference, {fmt(inputs['files'].get('feedback', 0))} feedback,"
        f" {fmt(inputs['files'].get('orphans', 0))} orphan files). Every number here is also in report.json.</p>",
        "<nav><ol><li><a href='#ratings'>Model ratings</a></li><li><a href='#bias'>Bias checks</a></li>"
        "<li><a href='#agreement'>Agreement</a></li><li><a href='#health'>Feedback health</a></li></ol></nav>",
        _section("ratings", "1. Model ratings", _ratings_html(ratings, data.get("ratings_per_source"))),
        _section("bias", "2. Bias checks", _bias_html(bias)),
        _section("agreement", "3. Agreement", _agreement_html(agreement)),
        _section("health", "4. Feedback health", _health_html(health)),
        "</body></html>",
    ]
    return "\n".join(parts)


def _ratings_table(ratings: dict[str, Any]) -> str:
    rows = [
        {
            **r,
            "bt_ci": _Raw(f"{fmt(r['bt_ci_low'], 1)} to {fmt(r['bt_ci_high'], 1)}"),
            "elo_ci": _Raw(f"{fmt(r['elo_ci_low'], 1)} to {fmt(r['elo_ci_high'], 1)}"),
        }
        for r in ratings["table"]
    ]
    return table(
        rows,
        [
            ("bt_rank", "rank"),
            ("model", "model"),
            ("bt_rating", "Bradley-Terry"),
            ("bt_ci", "BT interval"),
            ("bt_strength", "BT logit"),
            ("elo", "online Elo"),
            ("elo_median", "Elo median"),
            ("elo_ci", "Elo interval"),
            ("elo_rank", "Elo rank"),
            ("lc_win_rate", "length-controlled win rate"),
            ("win_rate", "win rate"),
            ("comparisons", "pairs"),
            ("wins", "wins"),
            ("ties", "ties"),
            ("losses", "losses"),
        ],
        text=("model",),
    )


def _ratings_html(ratings: dict[str, Any], per_source: dict[str, Any] | None) -> str:
    matrix = ratings["win_rate_matrix"]
    counts = matrix["count"]
    names = matrix["models"]
    count_rows = [{"model": m, **{f"c{j}": counts[i][j] for j in range(len(names))}} for i, m in enumerate(names)]
    parts = [
        f"<p>{fmt(ratings['comparisons'])} comparisons between different models from "
        f"{fmt(ratings['judgments'])} judgments (pairwise choices, and every pair of a ranking; ties count as half). "
        f"Bradley-Terry is the maximum-likelihood fit; online Elo updates in time order with K = "
        f"{fmt(ratings['elo_k'], 1)} (FastChat's scale: 400, base 10, start 1000). Intervals: "
        f"{fmt(ratings['confidence'] * 100, 0)} % bootstrap over {fmt(ratings['bootstrap_rounds'])} rounds "
        "(Bradley-Terry resamples whole judgments; Elo resamples pairs in random order, as FastChat does, "
        "so its interval surrounds the bootstrap median, while the online Elo is the value tracked in time "
        "order). The length-controlled win rate is the mean predicted win rate against every other model "
        "from a Bradley-Terry fit with length and position covariates.</p>",
        _ratings_table(ratings),
        figure_html("plot-ratings", _ratings_plot(ratings), "Ratings with their intervals."),
        "<h3>Win-rate matrix</h3><p>Row model's observed win rate against the column model (ties as half).</p>",
        figure_html(
            "plot-win-rate",
            _matrix_plot(names, matrix["win_rate"], "win rate of row model", 0, 1, "RdYlGn"),
            "Observed win rate, row against column.",
            size=(7, 5.5),
        ),
        table(
            [
                {"model": m, **{f"w{j}": matrix["win_rate"][i][j] for j in range(len(names))}}
                for i, m in enumerate(names)
            ],
            [("model", "win rate"), *[(f"w{j}", n) for j, n in enumerate(names)]],
            text=("model",),
        ),
        table(count_rows, [("model", "pairs"), *[(f"c{j}", n) for j, n in enumerate(names)]], text=("model",)),
    ]
    if per_source:
        parts.append("<h3>Per source type</h3>")
        for source, block in per_source.items():
            parts.append(f"<h4>{html.escape(source)}: {fmt(block['comparisons'])} comparisons</h4>")
            parts.append(_ratings_table(block))
    return "".join(parts)


def _bias_rows(bias: dict[str, Any], pick: Callable[[dict[str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    groups = [("all judgments", bias["overall"]), *bias["per_source"].items()]
    return [{"source": name, **pick(block)} for name, block in groups]


def _bias_html(bias: dict[str, Any]) -> str:
    groups = [("all judgments", bias["overall"]), *bias["per_source"].items()]
    position_rows = _bias_rows(
        bias,
        lambda b: {
            "n": b["position"]["first_shown_win_rate"]["n"],
            "raw": _Raw(interval(b["position"]["first_shown_win_rate"])),
            "logit": _Raw(interval(b["position"]["controlled_logit"])),
        },
    )
    length_rows = _bias_rows(
        bias,
        lambda b: {
            "n": b["length"]["longer_win_rate"]["n"],
            "raw": _Raw(interval(b["length"]["longer_win_rate"])),
            "controlled": _Raw(interval(b["length"]["controlled_longer_win_rate"])),
            "logit": _Raw(interval(b["length"]["controlled_logit"])),
        },
    )
    overall = bias["overall"]
    trend = bias["chosen_length_trend"]
    trend_rows = [{**p, "start": day(p["start_ms"])} for p in trend["points"]]
    return "".join(
        [
            "<h3>Position bias</h3><p>Win rate of the candidate shown first of the two (by presentation order; "
            "ties as half), with a 95 % cluster-robust interval: 0.5 means no position bias. The controlled "
            "logit is the effect of being shown first in a Bradley-Terry fit that also holds the models and "
            "the lengths fixed.</p>",
            table(
                position_rows,
                [
                    ("source", "source"),
                    ("n", "pairs"),
                    ("raw", "first-shown win rate [interval]"),
                    ("logit", "controlled logit [interval]"),
                ],
                text=("source",),
            ),
            figure_html(
                "plot-position",
                _bars_plot(
                    [g for g, _ in groups],
                    [b["position"]["first_shown_win_rate"] for _, b in groups],
                    "win rate of first shown",
                ),
                "Win rate of the candidate shown first, per source type.",
            ),
            "<h3>Length bias</h3><p>Win rate of the longer answer (raw), and length-controlled: the effect of "
            "log(length ratio) in a Bradley-Terry fit that holds the models and positions fixed, shown as the "
            "predicted win rate of the longer answer between equally strong models at the mean length gap.</p>",
            table(
                length_rows,
                [
                    ("source", "source"),
                    ("n", "pairs"),
                    ("raw", "longer-answer win rate [interval]"),
                    ("controlled", "length-controlled [interval]"),
                    ("logit", "logit per log-ratio"),
                ],
                text=("source",),
            ),
            figure_html(
                "plot-length",
                _bars_plot(
                    [b["ratio_bucket"] for b in overall["length"]["by_length_ratio"]],
                    overall["length"]["by_length_ratio"],
                    "win rate of longer answer",
                ),
                "Win rate of the longer answer by how much longer it is (all judgments).",
            ),
            table(
                overall["length"]["by_length_ratio"],
                [
                    ("ratio_bucket", "longer / shorter"),
                    ("n", "pairs"),
                    ("value", "longer win rate"),
                    ("ci_low", "low"),
                    ("ci_high", "high"),
                ],
                text=("ratio_bucket",),
            ),
            "<h3>Chosen length over time</h3><p>A chosen length that keeps growing faster than the rejected "
            "one is a reward-hacking signal. Slope of the chosen length: "
            f"{fmt(trend['slope_chars_per_day'], 2)} characters a day; chosen answer is the longer one in "
            f"{fmt(trend['chosen_longer_share'])} of decisive judgments.</p>",
            figure_html("plot-length-trend", _trend_plot(trend), "Mean length of chosen and rejected answers."),
            table(
                trend_rows,
                [
                    ("start", "from"),
                    ("n", "judgments"),
                    ("chosen_mean_length", "chosen length"),
                    ("rejected_mean_length", "rejected length"),
                    ("chosen_longer_share", "chosen is longer"),
                ],
                text=("start",),
            ),
        ]
    )


def _agreement_html(agreement: dict[str, Any]) -> str:
    sources = sorted(
        {r["source_a"] for r in agreement["between_sources"]} | {r["source_b"] for r in agreement["between_sources"]}
    )
    index = {s: i for i, s in enumerate(sources)}
    grid: list[list[float | None]] = [
        [1.0 if i == j else None for j in range(len(sources))] for i in range(len(sources))
    ]
    for row in agreement["between_sources"]:
        i, j = index[row["source_a"]], index[row["source_b"]]
        grid[i][j] = grid[j][i] = row["kappa"]
    return "".join(
        [
            "<p>Judgments of the same pair of candidates of the same request, as one of three verdicts "
            "(first wins, tie, second wins). Scores of one source on two candidates count as a verdict too "
            "(the higher score wins). Kappa corrects agreement for chance: 0 is chance, 1 is perfect.</p>",
            "<h3>Between source types</h3>",
            table(
                agreement["between_sources"],
                [
                    ("source_a", "source"),
                    ("source_b", "source"),
                    ("items", "shared pairs"),
                    ("agreement", "raw agreement"),
                    ("kappa", "Cohen's kappa"),
                ],
                text=("source_a", "source_b"),
            ),
            figure_html(
                "plot-agreement",
                _matrix_plot(sources, grid, "Cohen's kappa", -1, 1, "RdBu"),
                "Cohen's kappa between source types.",
                size=(7, 5.5),
            ),
            "<h3>Between raters of one source type</h3><p>Raters are told apart by source_id (or model); "
            "pairs judged by at least two of them.</p>",
            table(
                agreement["between_raters"],
                [
                    ("source_type", "source"),
                    ("items", "shared pairs"),
                    ("raters", "raters"),
                    ("rater_pairs", "rater pairs"),
                    ("agreement", "raw agreement"),
                    ("kappa", "pooled Cohen's kappa"),
                    ("fleiss_kappa", "Fleiss' kappa"),
                ],
                text=("source_type",),
            ),
        ]
    )


def _health_html(health: dict[str, Any] | None) -> str:
    if health is None:
        return (
            '<p class="na">not available: a compiled dataset does not keep the feedback events; '
            "run the report over the log for feedback health.</p>"
            + figure_html("plot-volume", _empty, "Feedback volume: needs the log.")
            + figure_html("plot-latency", _empty, "Feedback latency: needs the log.")
        )
    coverage = health["coverage"]
    latency = health["latency"]
    dead = health["dead_letters"]
    drops = health["compile_drop_counts"]
    counts = [
        {"what": "landed inferences", "n": coverage["inferences"]},
        {"what": "inferences with feedback", "n": coverage["with_feedback"]},
        {"what": "coverage (share with feedback)", "n": coverage["share"]},
        *({"what": f"feedback events: {op}", "n": n} for op, n in health["feedback_events"].items()),
        {"what": "feedback in force (after updates and deletes)", "n": health["feedback_live"]},
        {"what": "feedback deleted", "n": health["feedback_deleted"]},
        {"what": "orphaned feedback (no inference within the grace)", "n": health["orphans"]["total"]},
        {"what": "dead letters", "n": dead if dead is not None else _Raw('<span class="na">not available</span>')},
    ]
    latency_rows = [
        {"source": "all sources", **latency["overall"]},
        *({"source": s, **v} for s, v in latency["per_source"].items()),
    ]
    drop_html = (
        '<p class="na">not available (give the manifest.json of the last compile)</p>'
        if drops is None
        else table(
            [{"reason": k, "n": v} for k, v in drops.items()],
            [("reason", "reason"), ("n", "dropped")],
            text=("reason",),
        )
    )
    orphan_rows = [{"reason": k, "n": v} for k, v in health["orphans"]["by_reason"].items()]
    return "".join(
        [
            table(counts, [("what", "measure"), ("n", "value")], text=("what",)),
            table(
                health["by_source"],
                [("source_type", "source"), ("feedback", "feedback in force"), ("requests", "requests")],
                text=("source_type",),
            ),
            "<h3>Volume over time</h3>",
            figure_html("plot-volume", _volume_plot(health["volume"]), "Feedback events by source type over time."),
            table(
                [
                    {"start": day(t), **{s: c[i] for s, c in health["volume"]["by_source"].items()}}
                    for i, t in enumerate(health["volume"]["bucket_start_ms"])
                ],
                [("start", "from"), *[(s, s) for s in health["volume"]["by_source"]]],
                text=("start",),
            ),
            "<h3>Feedback latency</h3><p>Time of the feedback minus time of the inference it judges. "
            f"{fmt(latency['histogram']['not_positive'])} feedback events are not later than their inference.</p>",
            figure_html("plot-latency", _latency_plot(latency["histogram"]), "Distribution of feedback latency."),
            table(
                latency_rows,
                [
                    ("source", "source"),
                    ("n", "feedback"),
                    ("p50_s", "p50 (s)"),
                    ("p90_s", "p90 (s)"),
                    ("p99_s", "p99 (s)"),
                    ("mean_s", "mean (s)"),
                    ("min_s", "min (s)"),
                    ("max_s", "max (s)"),
                    ("negative", "negative"),
                ],
                text=("source",),
            ),
            "<h3>Orphans</h3>",
            table(orphan_rows, [("reason", "reason"), ("n", "orphans")], text=("reason",)),
            "<h3>Drops of the last compile</h3>",
            drop_html,
        ]
    )
