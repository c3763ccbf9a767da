"""Informative sampling (``--strategy``): which of the cleaned pairs teach the most, seeded and deterministic.

Runs in the sampling stage before the caps (:mod:`prefpair.compile.sampling`); a pair left out
gets a drop reason, and the manifest's ``sampling_strategy`` section says what ran and what it changed.

* ``uncertain``: the ``strategy_pairs`` pairs of smallest margin (the preference's strength in
  [0, 1]: scores of a judge or reward model close together), ties in seeded hash order.
* ``disagreement``: pairs whose two outputs (on one prompt) source types judged both ways come first,
  most contested first (the smaller side's share of the source types), then the rest in hash order.
* ``coverage``: round-robin over strata of (pair of models) x (prompt cluster: the prompt's first three
  words, lower case), each stratum in hash order, so rare model pairs and prompt kinds are kept.
* ``ipw``: per source type, ``p`` = the share of pairs whose chosen output was shown first (the
  position bias the report measures); a pair's inverse-propensity weight is ``0.5 / p`` when its
  chosen output was shown first, ``0.5 / (1 - p)`` when second; each pair is kept with probability
  weight / the largest weight (a seeded draw from its hash), so in what is kept the position of the
  chosen output no longer predicts it. Pairs of unknown position are kept.
"""

from __future__ import annotations

from typing import Any

from prefpair.compile.exceptions import CompileConfigError
from prefpair.compile.sql import sql_string
from prefpair.compile.workspace import Workspace

NOT_INFORMATIVE = "not_informative"
IPW_RESAMPLED = "ipw_resampled"
CLUSTER_WORDS = 3
UNIFORM = "((h % 1000003)::DOUBLE / 1000003)"
"""A pair's seeded draw in [0, 1), from its hash ``h``."""


def sample(ws: Workspace) -> None:
    """Apply the configured strategy to ``pairs`` (drops with a reason) and describe it in the manifest."""
    s = ws.config.sampling
    if s.strategy is None:
        return
    if ws.config.engine != "duckdb":
        raise CompileConfigError("sampling.strategy", f"runs on the duckdb engine only, not {ws.config.engine}")
    before = _summary(ws)
    if s.strategy == "ipw":
        details = _ipw(ws)
    else:
        assert s.strategy_pairs is not None
        order = {"uncertain": _uncertain_order, "disagreement": _disagreement_order, "coverage": _coverage_order}
        _keep_first(ws, *order[s.strategy](ws), s.strategy_pairs)
        details = {}
    ws.drops[NOT_INFORMATIVE] = ws.scalar(f"SELECT count(*) FROM pairs WHERE reason = {sql_string(NOT_INFORMATIVE)}")
    ws.drops[IPW_RESAMPLED] = ws.scalar(f"SELECT count(*) FROM pairs WHERE reason = {sql_string(IPW_RESAMPLED)}")
    after = _summary(ws)
    ws.sections["sampling_strategy"] = {
        "strategy": s.strategy,
        "strategy_pairs": s.strategy_pairs,
        "seed": ws.config.seed,
        "pairs_before": before.pop("pairs"),
        "pairs_after": after.pop("pairs"),
        "before": before,
        "after": after,
        **details,
    }


def _keep_first(ws: Workspace, order: str, joins: str, limit: int) -> None:
    """Keep the first ``limit`` valid pairs in ``order`` (an ORDER BY over ``pairs`` aliased ``p`` and ``joins``)."""
    ws.execute(
        f"""
        UPDATE pairs SET reason = {sql_string(NOT_INFORMATIVE)}
        FROM (
            SELECT pair_id FROM (
                SELECT p.pair_id, row_number() OVER (ORDER BY {order}, p.h, p.pair_id) AS rk
                FROM pairs p {joins} WHERE p.reason IS NULL
            ) WHERE rk > {int(limit)}
        ) x
        WHERE pairs.reason IS NULL AND pairs.pair_id = x.pair_id
        """
    )


def _uncertain_order(ws: Workspace) -> tuple[str, str]:
    return "p.margin ASC NULLS LAST", ""


def _disagreement_order(ws: Workspace) -> tuple[str, str]:
    """Contested first: per pair of outputs, the share of the smaller side of the source types that judged it."""
    ws.execute(
        """
        CREATE OR REPLACE TEMP TABLE contest AS
        SELECT prompt_id, lo, hi,
               least(count(DISTINCT source_type) FILTER (WHERE forward),
                     count(DISTINCT source_type) FILTER (WHERE NOT forward))::DOUBLE
                   / count(DISTINCT source_type) AS disagreement
        FROM (SELECT prompt_id, least(chosen_md5, rejected_md5) AS lo, greatest(chosen_md5, rejected_md5) AS hi,
                     chosen_md5 < rejected_md5 AS forward, coalesce(source_type, '') AS source_type
              FROM pairs WHERE reason IS NULL OR reason IN ('contradictory', 'duplicate'))
        GROUP BY ALL
        """
    )
    joins = ("LEFT JOIN contest k ON k.prompt_id = p.prompt_id AND k.lo = least(p.chosen_md5, p.rejected_md5) "
             "AND k.hi = greatest(p.chosen_md5, p.rejected_md5)")  # fmt: skip
    return "coalesce(k.disagreement, 0) DESC", joins


def _coverage_order(ws: Workspace) -> tuple[str, str]:
    """Round-robin over (pair of models) x (prompt cluster)."""
    ws.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE coverage AS
        SELECT pair_id, row_number() OVER (PARTITION BY stratum ORDER BY h, pair_id) AS rank_in_stratum
        FROM (
            SELECT p.pair_id, p.h,
                   least(coalesce(p.chosen_model, ''), coalesce(p.rejected_model, '')) || '|'
                   || greatest(coalesce(p.chosen_model, ''), coalesce(p.rejected_model, '')) || '|'
                   || c.cluster AS stratum
            FROM pairs p JOIN ({_clusters_sql(ws)}) c USING (request_id)
            WHERE p.reason IS NULL
        )
        """
    )
    return "v.rank_in_stratum", "JOIN coverage v ON v.pair_id = p.pair_id"


def _clusters_sql(ws: Workspace) -> str:
    """Each judged request's prompt cluster: its prompt's first words, lower case."""
    return f"""
        SELECT w.request_id,
               array_to_string(list_slice(regexp_split_to_array(lower(trim(prompt_text(w.prompt, w.messages))),
                                                                '\\s+'), 1, {CLUSTER_WORDS}), ' ') AS cluster
        FROM {ws.wide_source()} w
        SEMI JOIN requests q ON w.request_id = q.request_id AND w.src = q.src AND w.part = q.part AND w.off = q.off
    """


def _ipw(ws: Workspace) -> dict[str, Any]:
    """Inverse-propensity resampling of the chosen output's position, per source type."""
    ws.execute(
        """
        CREATE OR REPLACE TEMP TABLE position_propensity AS
        SELECT coalesce(source_type, '') AS source_key, avg((chosen_shown_at < rejected_shown_at)::INT) AS p_first,
               count(*) AS n
        FROM pairs
        WHERE reason IS NULL AND chosen_shown_at IS NOT NULL AND rejected_shown_at IS NOT NULL
        GROUP BY ALL
        """
    )
    ws.execute(
        f"""
        UPDATE pairs SET reason = {sql_string(IPW_RESAMPLED)}
        FROM position_propensity t
        WHERE pairs.reason IS NULL AND coalesce(pairs.source_type, '') = t.source_key
          AND t.p_first > 0 AND t.p_first < 1
          AND pairs.chosen_shown_at IS NOT NULL AND pairs.rejected_shown_at IS NOT NULL
          AND {UNIFORM.replace("h", "pairs.h")} >= CASE
                WHEN pairs.chosen_shown_at < pairs.rejected_shown_at
                THEN least(1.0, (1 - t.p_first) / t.p_first) ELSE least(1.0, t.p_first / (1 - t.p_first)) END
        """
    )
    return {
        "propensity": {
            str(source): {"p_chosen_shown_first": float(p), "pairs": int(n)}
            for source, p, n in ws.rows("SELECT source_key, p_first, n FROM position_propensity ORDER BY 1")
        }
    }


def _summary(ws: Workspace) -> dict[str, Any]:
    """What the strategies change, measured the same way before and after."""
    row = ws.rows(
        """
        SELECT count(*), avg(margin),
               avg((chosen_shown_at < rejected_shown_at)::INT)
                   FILTER (WHERE chosen_shown_at IS NOT NULL AND rejected_shown_at IS NOT NULL),
               count(DISTINCT least(coalesce(chosen_model, ''), coalesce(rejected_model, '')) || '|'
                              || greatest(coalesce(chosen_model, ''), coalesce(rejected_model, ''))),
               count(DISTINCT prompt_id)
        FROM pairs WHERE reason IS NULL
        """
    )[0]
    return {
        "pairs": int(row[0]),
        "mean_margin": None if row[1] is None else round(float(row[1]), 6),
        "share_chosen_shown_first": None if row[2] is None else round(float(row[2]), 6),
        "model_pairs": int(row[3]),
        "prompts": int(row[4]),
    }
