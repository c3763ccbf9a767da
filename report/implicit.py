"""Implicit rules against explicit judgments: how often each rule's preference agrees with what an
explicit source (annotator, app user, judge, reward model) said about the same two outputs.

The rules' preferences come from the same SQL compile uses (:mod:`prefpair.schemas.implicit`). An
explicit verdict is a comparison of the same two candidates of the same request (pairwise,
ranking, or two scores of one source: :mod:`prefpair.report.load`), or, for a regeneration whose
outputs live in two requests, two scores of one source and key, one on each output. Ties say
nothing and are left out. Agreement is the share of verdicts that pick the rule's chosen output,
with a cluster-robust interval (requests are the clusters) at the report's confidence; overall
and per explicit source type. An edit is text no explicit judgment compares: it shows no number.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from prefpair.report.config import ReportConfig
from prefpair.report.exceptions import ReportInputError
from prefpair.report.load import LogData
from prefpair.report.stats import cluster_mean, z_value
from prefpair.schemas.implicit import ImplicitRulesError, load_rules, preference_sql

VERDICTS_SQL = """
WITH prefs AS (
    SELECT rule, request_id, chosen_request_id, chosen_id, rejected_id
    FROM implicit_raw WHERE reason IS NULL AND chosen_id IS NOT NULL AND chosen_request_id IS NOT NULL
), same_request AS (
    SELECT p.rule, p.request_id AS cluster, c.source_type,
           CASE WHEN c.a_id = p.chosen_id THEN c.score_a ELSE 1 - c.score_a END AS agree
    FROM prefs p JOIN comparisons c
      ON p.chosen_request_id = p.request_id AND c.request_id = p.request_id
     AND ((c.a_id = p.chosen_id AND c.b_id = p.rejected_id) OR (c.a_id = p.rejected_id AND c.b_id = p.chosen_id))
    WHERE c.score_a <> 0.5
), scores AS (
    SELECT request_id, candidate_id, key, source_type, source_key, arg_max(score, created_ms) AS score
    FROM live WHERE kind = 'SCORE' AND score IS NOT NULL AND candidate_id IS NOT NULL
    GROUP BY ALL
), across_requests AS (
    SELECT p.rule, p.request_id AS cluster, w.source_type, CASE WHEN w.score > l.score THEN 1.0 ELSE 0.0 END AS agree
    FROM prefs p
    JOIN scores w ON w.request_id = p.chosen_request_id AND w.candidate_id = p.chosen_id
    JOIN scores l ON l.request_id = p.request_id AND l.candidate_id = p.rejected_id
     AND l.key IS NOT DISTINCT FROM w.key AND l.source_key = w.source_key
    WHERE p.chosen_request_id <> p.request_id AND w.score <> l.score
)
SELECT * FROM same_request UNION ALL SELECT * FROM across_requests
"""


def rule_agreement(data: LogData, config: ReportConfig) -> dict[str, Any]:
    """Per implicit rule: its preferences, and their agreement with explicit verdicts (see the module)."""
    try:
        rules = load_rules(config.implicit_rules)
    except ImplicitRulesError as exc:
        raise ReportInputError(f"implicit_rules ({exc.where}): {exc.field}", exc.reason) from None
    columns = {str(row[0]) for row in data.con.execute("DESCRIBE inference_raw").fetchall()}
    for statement in preference_sql(rules, "signals_raw", "inference_raw",
                                    has_parent="parent_request_id" in columns):  # fmt: skip
        data.con.execute(statement)
    found = data.con.execute("SELECT rule, count(*) FROM implicit_raw WHERE reason IS NULL GROUP BY rule")
    counts = {str(rule): int(n) for rule, n in found.fetchall()}
    verdicts = data.rows(VERDICTS_SQL)
    z = z_value(config.confidence)
    out = []
    for rule in rules.rules:
        mine = [v for v in verdicts if v["rule"] == rule.name]
        agree = np.array([float(v["agree"]) for v in mine])
        clusters = np.array([str(v["cluster"]) for v in mine], dtype=object)
        by_source = []
        for source in sorted({str(v["source_type"]) for v in mine}):
            mask = np.array([str(v["source_type"]) == source for v in mine])
            by_source.append({"source_type": source, **cluster_mean(agree[mask], clusters[mask], z).as_dict()})
        out.append({
            "rule": rule.name, "kind": rule.kind, "confidence": rule.confidence,
            "preferences": counts.get(rule.name, 0),
            **cluster_mean(agree, clusters, z).as_dict(),
            "by_source": by_source,
        })  # fmt: skip
    return {"level": config.confidence, "rules": out}
