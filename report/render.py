"""The report as one self-contained HTML page: inline CSS, plots as inline SVG (matplotlib's
Agg backend, text drawn as paths), nothing fetched from anywhere.

Each plot sits in a ``<figure id="plot-...">``; :data:`PLOT_IDS` lists them all, and every one
is drawn even without data (it then says so), so the page always has the same shape.
"""

from __future__ import annotations

import functools
import html
import io
import math
from collections.abc import Callable, Mapping, Sequence
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
# Decimals of each kind of number: one rule per column, whatever the magnitude.
RATING_DIGITS = 1  # Elo-scale ratings
SHARE_DIGITS = 3  # win rates, agreement, kappa, logits
SECONDS_DIGITS = 2
LENGTH_DIGITS = 1  # mean lengths in characters
NA = '<span class="na">n/a</span>'


def fmt(value: Any, digits: int = SHARE_DIGITS) -> str:
    """A number as the page shows it: integers with thousands separators, other numbers with
    exactly ``digits`` decimals (and thousands separators), missing ones as n/a."""
    if value is None:
        return NA
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            return NA
        return f"{float(value):,.{digits}f}"
    return html.escape(str(value))


def percent(share: float) -> str:
    """A confidence level as a percentage: 0.95 -> "95 %", 0.975 -> "97.5 %"."""
    return f"{share * 100:g} %"


def interval(row: dict[str, Any] | None, digits: int = SHARE_DIGITS) -> str:
    if not row or row.get("value") is None:
        return fmt(None)
    return f"{fmt(row['value'], digits)} [{fmt(row.get('ci_low'), digits)}, {fmt(row.get('ci_high'), digits)}]"


def table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    text: Sequence[str] = (),
    digits: Mapping[str, int] | None = None,
) -> str:
    """An HTML table of ``rows`` with ``(key, heading)`` columns; ``text`` columns align left;
    numbers of a column get that column's ``digits`` (default :data:`SHARE_DIGITS`)."""
    if not rows:
        return '<p class="na">no data</p>'
    digits = digits or {}
    head = "".join(f'<th class="{"text" if k in text else ""}">{html.escape(h)}</th>' for k, h in columns)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="{"text" if k in text else ""}">'
            f"{row[k] if isinstance(row.get(k), _Raw) else fmt(row.get(k), digits.get(k, SHARE_DIGITS))}</td>"
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
# Every axes is tagged in the SVG (matplotlib's gid): ``<plot id>/panel/<panel>`` for the panel,
# ``.../frame`` for its background, ``.../bar/<key>`` for a bar and ``.../cell/<row>/<column>``
# for a matrix cell's text, so a reader (or a test) can tell which panel shows what.
MAIN_PANEL = "main"
NO_DATA_COLOR = "#e1e5ea"


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


def _tag(ax: Any, plot_id: str, panel: str) -> None:
    ax.set_gid(f"{plot_id}/panel/{panel}")
    ax.patch.set_gid(f"{plot_id}/panel/{panel}/frame")


def _figure(plot_id: str, figure: Figure, caption: str) -> str:
    return f'<figure id="{plot_id}">{_svg(figure, plot_id)}<figcaption>{html.escape(caption)}</figcaption></figure>'


def figure_html(plot_id: str, draw: Callable[[Any], None], caption: str, size: tuple[float, float] = (9, 4)) -> str:
    """One plot on one axes (panel ``main``)."""
    figure, ax = plt.subplots(figsize=size)
    _tag(ax, plot_id, MAIN_PANEL)
    draw(ax)
    return _figure(plot_id, figure, caption)


def panels_html(
    plot_id: str,
    panels: Sequence[tuple[str, Callable[[Any], None]]],
    caption: str,
    empty: str = "no data",
    panel_size: tuple[float, float] = (5.2, 3.4),
    columns: int = 2,
) -> str:
    """Small multiples: one axes per ``(panel key, draw)``, ``columns`` a row; a single
    "no data" axes when there is no panel."""
    if not panels:
        return figure_html(plot_id, lambda ax: _empty(ax, empty), caption)
    cols = min(columns, len(panels))
    rows = math.ceil(len(panels) / cols)
    figure, axes = plt.subplots(rows, cols, figsize=(panel_size[0] * cols, panel_size[1] * rows), squeeze=False)
    for ax, (panel, draw) in zip(axes.flat, panels, strict=False):
        _tag(ax, plot_id, panel)
        draw(ax)
    for ax in axes.flat[len(panels) :]:
        figure.delaxes(ax)
    figure.tight_layout()
    return _figure(plot_id, figure, caption)


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


def _plain(value: float | None, digits: int = SHARE_DIGITS) -> str:
    """A number as plot text: fixed decimals, "n/a" when missing."""
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _plain_interval(row: dict[str, Any] | None, digits: int = SHARE_DIGITS) -> str:
    if not row or row.get("value") is None:
        return "n/a"
    return f"{_plain(row['value'], digits)} [{_plain(row.get('ci_low'), digits)}, {_plain(row.get('ci_high'), digits)}]"


def _bars(
    ax: Any,
    keys: list[str],
    labels: list[str],
    rows: list[dict[str, Any] | None],
    ylabel: str,
    confidence: float,
    legend: bool = True,
) -> None:
    """Win rates with their intervals as bars (those with a value), a dashed line at 0.5; the
    legend (outside, on the right) only when asked: small multiples explain it in the caption."""
    present = [
        (key, lab, r) for key, lab, r in zip(keys, labels, rows, strict=True) if r and r.get("value") is not None
    ]
    if not present:
        return _empty(ax)
    x = np.arange(len(present))
    values = np.array([r["value"] for _, _, r in present], dtype=float)
    low = np.array([r["ci_low"] if r.get("ci_low") is not None else r["value"] for _, _, r in present], dtype=float)
    high = np.array([r["ci_high"] if r.get("ci_high") is not None else r["value"] for _, _, r in present], dtype=float)
    bars = ax.bar(x, values, color="#6c9bd2", width=0.6)
    for bar, (key, _, _) in zip(bars, present, strict=True):
        bar.set_gid(f"{ax.get_gid()}/bar/{key}")
    ax.errorbar(
        x, values, yerr=[values - low, high - values], fmt="none", ecolor="#1d2733", capsize=4,
        label=f"{percent(confidence)} interval",
    )
    ax.axhline(0.5, color="#c0392b", linestyle="--", linewidth=1, label="no bias (0.5)")
    ax.set_xticks(x, [f"{lab}\n(n={r['n']:,})" for _, lab, r in present], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return None


def _trend(ax: Any, title: str, trend: dict[str, Any]) -> None:
    """Mean chosen and rejected lengths over time, one panel."""
    ax.set_title(title, fontsize=9)
    points = trend["points"]
    when = [datetime.fromtimestamp(p["start_ms"] / 1000, tz=UTC) for p in points]
    ax.plot(when, [p["chosen_mean_length"] for p in points], "o-", label="chosen", color="#2e8b57", markersize=3)
    ax.plot(when, [p["rejected_mean_length"] for p in points], "s--", label="rejected", color="#b03a2e", markersize=3)
    ax.set_ylabel("mean length (characters)", fontsize=8)
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    ax.grid(alpha=0.3)


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
        "<li><a href='#agreement'>Agreement</a></li><li><a href='#health'>Feedback health</a></li>"
        "<li><a href='#experiments'>Experiments</a></li><li><a href='#implicit'>Implicit rules</a></li></ol></nav>",
        _section("ratings", "1. Model ratings", _ratings_html(ratings, data.get("ratings_per_source"))),
        _section("bias", "2. Bias checks", _bias_html(bias)),
        _section("agreement", "3. Agreement", _agreement_html(agreement)),
        _section("health", "4. Feedback health", _health_html(health)),
        _section("experiments", "5. Experiments", _experiments_html(data.get("experiments") or [])),
        _section("implicit", "6. Implicit rules against explicit judgments",
                 _implicit_html(data.get("implicit_rules"))),
        "</body></html>",
    ]
    return "\n".join(parts)


def _implicit_html(implicit: dict[str, Any] | None) -> str:
    """Each implicit rule's agreement with explicit verdicts on the same outputs, with its interval."""
    if implicit is None:
        return '<p class="na">a report over a compiled dataset keeps no signals</p>'
    rows = []
    for rule in implicit["rules"]:
        per_source = "; ".join(f"{s['source_type']} {interval(s)} (n={s['n']})" for s in rule["by_source"])
        rows.append(
            {**rule, "agreement": _Raw(html.escape(interval(rule))), "per_source": _Raw(html.escape(per_source))}
        )
    return (
        "<p>How often each rule's preference (compile's implicit pairs, source type IMPLICIT:&lt;rule&gt;) agrees "
        "with an explicit verdict on the same two outputs of the same request (for a regeneration: two scores of "
        f"one source, one on each output). Ties are left out; intervals at {percent(implicit['level'])}, requests "
        "as clusters. A rule well below its confidence, or near 0.5, is not worth training on.</p>"
        + table(
            rows,
            [("rule", "rule"), ("kind", "signal"), ("confidence", "confidence"), ("preferences", "preferences"),
             ("n", "explicit verdicts"), ("agreement", "agreement [interval]"), ("per_source", "per source type")],
            text=("rule", "kind", "per_source"),
        )
    )


def _ratings_table(ratings: dict[str, Any]) -> str:
    rows = [
        {
            **r,
            "bt_ci": _Raw(f"{fmt(r['bt_ci_low'], RATING_DIGITS)} to {fmt(r['bt_ci_high'], RATING_DIGITS)}"),
            "elo_ci": _Raw(f"{fmt(r['elo_ci_low'], RATING_DIGITS)} to {fmt(r['elo_ci_high'], RATING_DIGITS)}"),
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
        digits={"bt_rating": RATING_DIGITS, "elo": RATING_DIGITS, "elo_median": RATING_DIGITS},
    )


def _ratings_html(ratings: dict[str, Any], per_source: dict[str, Any] | None) -> str:
    matrix = ratings["win_rate_matrix"]
    counts = matrix["count"]
    names = matrix["models"]
    count_rows = [{"model": m, **{f"c{j}": counts[i][j] for j in range(len(names))}} for i, m in enumerate(names)]
    parts = [
        f"<p>{fmt(ratings['comparisons'])} comparisons between different models from "
        f"{fmt(ratings['judgments'])} judgments of {fmt(ratings['items'])} requests (pairwise choices, and every "
        "pair of a ranking; ties count as half"
        + (
            "; pairs implied by two scores of one source count too"
            if ratings["score_pairs"]
            else "; pairs implied by two scores of one source, such as a reward model's, are left out"
        )
        + "). Bradley-Terry is the maximum-likelihood fit; online Elo updates in time order with K = "
        f"{fmt(ratings['elo_k'], 1)} (FastChat's scale: 400, base 10, start 1000). Intervals: "
        f"{percent(ratings['confidence'])} bootstrap over {fmt(ratings['bootstrap_rounds'])} rounds that "
        "resample whole requests, every judgment of a request together (two raters of one request see the same "
        "prompt and answers, so their verdicts are not independent); Elo plays each round's pairs in a random "
        "order, as FastChat does, so its interval surrounds the bootstrap median, while the online Elo is the "
        "value tracked in time order. The length-controlled win rate is the mean predicted win rate against "
        "every other model from a Bradley-Terry fit with length and position covariates.</p>",
        _ratings_table(ratings),
        figure_html(
            "plot-ratings", _ratings_plot(ratings), f"Ratings with their {percent(ratings['confidence'])} intervals."
        ),
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


OVERALL = "overall"  # the key of the group that rates models, beside the source types
ORIGIN_NAMES = {
    "pairwise": "pairwise choices",
    "ranking": "pairs from rankings",
    "score": "pairs implied by two scores",
    "dataset": "pairs of the dataset",
}


def _overall_label(bias: dict[str, Any]) -> str:
    """What the overall group is, in its own words: it says what it leaves out."""
    return "all sources except score pairs" if bias["overall"]["left_out"]["comparisons"] else "all sources"


def _bias_groups(bias: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(key, label, block) of the overall group, then of each source type."""
    return [
        (OVERALL, _overall_label(bias), bias["overall"]),
        *((source, source, block) for source, block in bias["per_source"].items()),
    ]


def _origins(by_origin: dict[str, int]) -> str:
    parts = [f"{fmt(n)} {ORIGIN_NAMES.get(origin, origin)}" for origin, n in by_origin.items() if n]
    return ", ".join(parts) or "no pairs"


def _left_out(bias: dict[str, Any]) -> str:
    """What the overall group leaves out, as a plain-text phrase ("" when nothing)."""
    left = bias["overall"]["left_out"]
    if not left["comparisons"]:
        return ""
    sources = left["by_source"]
    by_source = next(iter(sources)) if len(sources) == 1 else ", ".join(f"{s} {fmt(n)}" for s, n in sources.items())
    return f"{_origins(left['by_origin'])} from {by_source}"


def _scope_html(bias: dict[str, Any]) -> str:
    """Says plainly what each row and each plot of the bias section holds and leaves out."""
    overall = bias["overall"]
    label = html.escape(_overall_label(bias))
    left = html.escape(_left_out(bias))
    overall_text = f"<b>{label}</b> holds the {_origins(overall['by_origin'])} of every source type"
    if left:
        overall_text += (
            f"; it leaves out {left}, as the model ratings do (run the report with --score-pairs to count "
            "them); they are in the rows and panels of their own source type"
        )
    else:
        overall_text += "; it leaves nothing out"
    per_source = "; ".join(
        f"<b>{html.escape(source)}</b> {_origins(block['by_origin'])}" for source, block in bias["per_source"].items()
    )
    return (
        f'<p class="note">What each row and plot of this section holds. {overall_text}. Each source type\'s '
        f"rows and panels hold every pair of that source, score pairs included: {per_source or 'none'}. "
        f"Intervals: {percent(bias['confidence'])}, clustered by request (the judgments of one request "
        "are not independent).</p>"
    )


def _length_panel(ax: Any, label: str, length: dict[str, Any], confidence: float) -> None:
    """The longer answer's win rate by length ratio, for one group."""
    buckets = length["by_length_ratio"]
    ax.set_title(
        f"{label}: {length['longer_win_rate']['n']:,} pairs\n"
        f"longer wins {_plain_interval(length['longer_win_rate'])}; "
        f"controlled logit {_plain_interval(length['controlled_logit'], 2)}",
        fontsize=9,
    )
    _bars(
        ax,
        [str(i) for i in range(len(buckets))],
        [b["ratio_bucket"] for b in buckets],
        buckets,
        "win rate of the longer answer",
        confidence,
        legend=False,
    )


def _length_panels(bias: dict[str, Any]) -> list[tuple[str, Callable[[Any], None]]]:
    """One panel per group with length data."""
    return [
        (key, functools.partial(_length_panel, label=label, length=block["length"], confidence=bias["confidence"]))
        for key, label, block in _bias_groups(bias)
        if block["length"]["longer_win_rate"]["n"]
    ]


def _trend_panels(bias: dict[str, Any]) -> list[tuple[str, Callable[[Any], None]]]:
    """One panel per group with decisive judgments of known lengths."""
    panels: list[tuple[str, Callable[[Any], None]]] = []
    for key, label, block in _bias_groups(bias):
        trend = block["chosen_length_trend"]
        if not trend["points"]:
            continue
        title = (
            f"{label}: {sum(p['n'] for p in trend['points']):,} decisive judgments\n"
            f"chosen is longer in {_plain(trend['chosen_longer_share'])}; "
            f"chosen length {_plain(trend['slope_chars_per_day'], 2)} chars/day"
        )
        panels.append((key, functools.partial(_trend, title=title, trend=trend)))
    return panels


def _without_data(bias: dict[str, Any], has_data: Callable[[dict[str, Any]], bool]) -> str:
    missing = [label for _, label, block in _bias_groups(bias) if not has_data(block)]
    return f" No panel for {', '.join(missing)}: no data." if missing else ""


def _bias_html(bias: dict[str, Any]) -> str:
    groups = _bias_groups(bias)
    level = percent(bias["confidence"])
    left = _left_out(bias)
    overall_note = f"{_overall_label(bias)} (leaves out {left})" if left else _overall_label(bias)
    position_rows = [
        {
            "source": label,
            "n": b["position"]["first_shown_win_rate"]["n"],
            "raw": _Raw(interval(b["position"]["first_shown_win_rate"])),
            "logit": _Raw(interval(b["position"]["controlled_logit"])),
        }
        for _, label, b in groups
    ]
    length_rows = [
        {
            "source": label,
            "n": b["length"]["longer_win_rate"]["n"],
            "raw": _Raw(interval(b["length"]["longer_win_rate"])),
            "controlled": _Raw(interval(b["length"]["controlled_longer_win_rate"])),
            "logit": _Raw(interval(b["length"]["controlled_logit"])),
        }
        for _, label, b in groups
    ]
    buckets = [bucket["ratio_bucket"] for bucket in bias["overall"]["length"]["by_length_ratio"]]
    bucket_rows = [
        {"source": label, **{f"b{i}": _Raw(interval(row)) for i, row in enumerate(b["length"]["by_length_ratio"])}}
        for _, label, b in groups
        if b["length"]["longer_win_rate"]["n"]
    ]
    trend_summary = [
        {
            "source": label,
            "n": sum(p["n"] for p in b["chosen_length_trend"]["points"]),
            "slope": b["chosen_length_trend"]["slope_chars_per_day"],
            "longer": b["chosen_length_trend"]["chosen_longer_share"],
        }
        for _, label, b in groups
    ]
    trend_rows = [{**p, "start": day(p["start_ms"])} for p in bias["overall"]["chosen_length_trend"]["points"]]
    return "".join(
        [
            _scope_html(bias),
            "<h3>Position bias</h3><p>Win rate of the candidate shown first of the two (by presentation order; "
            f"ties as half), with a {level} interval clustered by request: 0.5 means no position bias. The "
            "controlled logit is the effect of being shown first in a Bradley-Terry fit that also holds the "
            "models and the lengths fixed.</p>",
            table(
                position_rows,
                [
                    ("source", "source"),
                    ("n", "pairs"),
                    ("raw", f"first-shown win rate [{level} interval]"),
                    ("logit", f"controlled logit [{level} interval]"),
                ],
                text=("source",),
            ),
            figure_html(
                "plot-position",
                lambda ax: _bars(
                    ax,
                    [key for key, _, _ in groups],
                    [label.replace(" except ", "\nexcept ") for _, label, _ in groups],
                    [b["position"]["first_shown_win_rate"] for _, _, b in groups],
                    "win rate of first shown",
                    bias["confidence"],
                ),
                f"Win rate of the candidate shown first, with {level} intervals: {overall_note}, then each "
                "source type with all its pairs (groups without a presentation order are not drawn).",
            ),
            "<h3>Length bias</h3><p>Win rate of the longer answer (raw), and length-controlled: the effect of "
            "log(length ratio) in a Bradley-Terry fit that holds the models and positions fixed, shown as the "
            "predicted win rate of the longer answer between equally strong models at the mean length gap.</p>",
            table(
                length_rows,
                [
                    ("source", "source"),
                    ("n", "pairs"),
                    ("raw", f"longer-answer win rate [{level} interval]"),
                    ("controlled", f"length-controlled [{level} interval]"),
                    ("logit", f"logit per log-ratio [{level} interval]"),
                ],
                text=("source",),
            ),
            panels_html(
                "plot-length",
                _length_panels(bias),
                f"Win rate of the longer answer by how much longer it is (bars; whiskers: {level} intervals; "
                f"dashed line: 0.5, no length bias). One panel for {overall_note}, then one per source type "
                "with all its pairs."
                + _without_data(bias, lambda b: bool(b["length"]["longer_win_rate"]["n"])),
                empty="no pair with both lengths known",
            ),
            f"<p>Win rate of the longer answer [{level} interval] by length ratio (longer / shorter):</p>",
            table(
                bucket_rows,
                [("source", "source"), *((f"b{i}", label) for i, label in enumerate(buckets))],
                text=("source",),
            ),
            "<h3>Chosen length over time</h3><p>Mean length of the chosen and the rejected answer of decisive "
            "judgments (no ties). A chosen length that keeps growing faster than the rejected one is a "
            "reward-hacking signal.</p>",
            table(
                trend_summary,
                [
                    ("source", "source"),
                    ("n", "decisive judgments"),
                    ("slope", "chosen length, characters a day"),
                    ("longer", "chosen is longer"),
                ],
                text=("source",),
                digits={"slope": 2},
            ),
            panels_html(
                "plot-length-trend",
                _trend_panels(bias),
                f"Mean length of chosen and rejected answers over time; one panel for {overall_note}, then one "
                "per source type with all its pairs."
                + _without_data(bias, lambda b: bool(b["chosen_length_trend"]["points"])),
                empty="no decisive judgment with both lengths known",
            ),
            f"<p>Over time, {html.escape(overall_note)}:</p>",
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
                digits={"chosen_mean_length": LENGTH_DIGITS, "rejected_mean_length": LENGTH_DIGITS},
            ),
        ]
    )


def agreement_cells(agreement: dict[str, Any]) -> tuple[list[str], list[list[dict[str, Any] | None]]]:
    """Source types and, for each (row, column), the agreement it shows: between the two
    source types off the diagonal, between raters of one source type on it; None where the
    report has no such row."""
    sources = sorted(
        {r["source_type"] for r in agreement["between_raters"]}
        | {r["source_a"] for r in agreement["between_sources"]}
        | {r["source_b"] for r in agreement["between_sources"]}
    )
    index = {s: i for i, s in enumerate(sources)}
    cells: list[list[dict[str, Any] | None]] = [[None] * len(sources) for _ in sources]
    for row in agreement["between_sources"]:
        i, j = index[row["source_a"]], index[row["source_b"]]
        cells[i][j] = cells[j][i] = row
    for row in agreement["between_raters"]:
        i = index[row["source_type"]]
        cells[i][i] = row
    return sources, cells


def agreement_cell_text(cell: dict[str, Any] | None, diagonal: bool) -> str:
    """What a cell of the agreement plot says: kappa and shared pairs, or "no data"."""
    if not cell or not cell["items"]:
        return "no data"
    lines = ["between raters"] if diagonal else []
    if cell["kappa"] is None:
        lines += ["kappa undefined", f"agree {_plain(cell['agreement'], 2)}"]
    else:
        lines += [f"kappa {_plain(cell['kappa'], 2)}"]
    lines.append(f"n={cell['items']:,}")
    return "\n".join(lines)


def _agreement_plot(agreement: dict[str, Any]) -> Callable[[Any], None]:
    def draw(ax: Any) -> None:
        sources, cells = agreement_cells(agreement)
        if not any(c and c["items"] for row in cells for c in row):
            return _empty(ax, "no pair of candidates judged by two source types or two raters")
        kappa = np.array(
            [[c["kappa"] if c and c["items"] and c["kappa"] is not None else np.nan for c in row] for row in cells],
            dtype=float,
        )
        cmap = matplotlib.colormaps["RdBu"].with_extremes(bad=NO_DATA_COLOR)
        image = ax.imshow(np.ma.masked_invalid(kappa), cmap=cmap, vmin=-1, vmax=1)
        ax.set_xticks(range(len(sources)), sources, rotation=30, ha="right")
        ax.set_yticks(range(len(sources)), sources)
        for i, row_source in enumerate(sources):
            for j, column_source in enumerate(sources):
                text = agreement_cell_text(cells[i][j], i == j)
                ax.text(
                    j, i, text, ha="center", va="center", fontsize=8,
                    color="#5a6b7d" if text == "no data" else "#1d2733",
                    gid=f"{ax.get_gid()}/cell/{row_source}/{column_source}",
                )
        ax.figure.colorbar(image, ax=ax, label="Cohen's kappa")
        return None

    return draw


def _agreement_html(agreement: dict[str, Any]) -> str:
    sources, _ = agreement_cells(agreement)
    return "".join(
        [
            "<p>Judgments of the same pair of candidates of the same request, as one of three verdicts "
            "(first wins, tie, second wins). Scores of one source on two candidates count as a verdict too "
            "(the higher score wins). Kappa corrects agreement for chance: 0 is chance, 1 is perfect.</p>",
            figure_html(
                "plot-agreement",
                _agreement_plot(agreement),
                "Cohen's kappa and the number of shared pairs (n). Off the diagonal: between two source types, "
                "on the pairs both judged. On the diagonal: between raters of one source type (told apart by "
                "source_id or model; pooled pairwise kappa). \"no data\": no pair judged by both (on the "
                "diagonal: by two raters of that type); "
                "\"kappa undefined\": every verdict was the same, so chance agreement is 1.",
                size=(2.2 + 1.6 * max(2, len(sources)), 1.2 + 1.4 * max(2, len(sources))),
            ),
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
            f"<p>Coverage: {fmt(coverage['with_feedback'])} of {fmt(coverage['inferences'])} landed inferences "
            f"({'n/a' if coverage['share'] is None else percent(round(coverage['share'], 3))}) have feedback.</p>",
            table(counts, [("what", "measure"), ("n", "count")], text=("what",)),
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
                digits={k: SECONDS_DIGITS for k in ("p50_s", "p90_s", "p99_s", "mean_s", "min_s", "max_s")},
            ),
            "<h3>Orphans</h3>",
            table(orphan_rows, [("reason", "reason"), ("n", "orphans")], text=("reason",)),
            "<h3>Drops of the last compile</h3>",
            drop_html,
        ]
    )


def _experiments_html(experiments: list[dict[str, Any]]) -> str:
    """One block per comparative experiment: its winner statement and head-to-head win rates."""
    if not experiments:
        return '<p class="na">No comparative experiments: no feedback carries an experiment_id.</p>'
    blocks = []
    for entry in experiments:
        anchor = "experiment-" + html.escape(entry["experiment_id"], quote=True)
        rows = [
            {
                **pair,
                "pair": _Raw(f"{html.escape(pair['arm_a'])} vs {html.escape(pair['arm_b'])}"),
                "rate": _Raw(interval({"value": pair["win_rate_a"], "ci_low": pair["ci_low"],
                                       "ci_high": pair["ci_high"]})),
                "better_text": _Raw(html.escape(pair["better"]) if pair["better"] else "not yet"),
            }
            for pair in entry["pairs"]
        ]  # fmt: skip
        heading = html.escape(entry["name"])
        if entry["name"] != entry["experiment_id"]:
            heading += f" <code>{html.escape(entry['experiment_id'])}</code>"
        columns = [
            ("pair", "arms"), ("judgments", "judgments"), ("wins_a", "wins first"), ("wins_b", "wins second"),
            ("ties", "ties"), ("rate", "first's win rate [always-valid interval]"), ("better_text", "better"),
            ("judgments_needed", "more judgments needed (est.)"),
        ]  # fmt: skip
        blocks.append(
            f'<div class="experiment" id="{anchor}"><h3>{heading}</h3>'
            f'<p class="statement"><strong>{html.escape(entry["statement"])}</strong></p>'
            f"<p>Arms: {html.escape(', '.join(entry['arms']))}. Judgments between arms: {fmt(entry['judgments'])}"
            f" (outside the arms: {fmt(entry['judgments_outside_arms'])}).</p>"
            + table(rows, columns, text=("pair", "better_text"))
            + f'<p class="note">{html.escape(entry["method"])}; per pair level '
            f"{percent(1 - entry['pair_alpha'])}.</p></div>"
        )
    return "".join(blocks)
