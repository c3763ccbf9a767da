"""Stages 5 and 6: (chosen, rejected) pairs derived from judgments, then checked one by one.

Pairwise PREFERRED judgments; rankings (all pairs or best against worst); scores of one key and
one scorer on candidates of a request (the mean per candidate, difference >= ``min_margin`` and
> 0); corrections (the correction against the candidate it corrects). Ties and both-bad give no
pair. Each pair's ``margin`` is the strength of its preference in [0, 1] times ``margin_scale``.
Validation drops unknown candidates, the model filters, margins below the minimum, empty and
identical outputs; it gives each pair its content id (prompt, chosen text, rejected text).
"""

from __future__ import annotations

from prefpair.compile.sql import reason_case, sql_in, sql_string
from prefpair.compile.workspace import Workspace


def derive(ws: Workspace) -> None:
    """Stage 5: ``derived``, the pairs of every kind of judgment (ties, both-bad and incomplete ones as drops)."""
    common = "key, source_type, judged_at_ms"
    scale = f"{float(ws.config.margin_scale)!r}::DOUBLE"  # the margin of a full-strength preference
    best_worst = "AND a.level = 1 AND b.level = a.n_levels" if ws.config.rankings == "best_worst" else ""
    ws.execute(
        f"""
        CREATE TEMP TABLE derived AS
        -- pairwise judgments
        SELECT [feedback_id] AS feedback_ids, request_id, 'pairwise' AS derivation, chosen_id, rejected_id,
               NULL::VARCHAR AS correction, {scale} AS margin, NULL::DOUBLE AS score_chosen,
               NULL::DOUBLE AS score_rejected, {common},
               CASE WHEN outcome = 'TIE' THEN 'tie'
                    WHEN outcome = 'BOTH_BAD' THEN 'both_bad'
                    WHEN outcome IS DISTINCT FROM 'PREFERRED' OR chosen_id IS NULL OR rejected_id IS NULL
                         OR chosen_id = rejected_id THEN 'incomplete'
               END AS reason
        FROM judgments WHERE reason IS NULL AND kind = 'PAIRWISE'
        UNION ALL
        -- rankings: tie groups, best first
        (WITH levels AS (
            SELECT feedback_id, request_id, {common}, len(ranking) AS n_levels,
                   unnest(ranking) AS grp, generate_subscripts(ranking, 1) AS level
            FROM judgments WHERE reason IS NULL AND kind = 'RANKING' AND len(ranking) > 1
         ), members AS (SELECT *, unnest(grp) AS candidate_id FROM levels)
         SELECT [a.feedback_id], a.request_id, 'ranking', a.candidate_id, b.candidate_id, NULL,
                round({scale} * (b.level - a.level) / (a.n_levels - 1), 6), NULL, NULL, a.key, a.source_type,
                a.judged_at_ms, NULL
         FROM members a JOIN members b ON a.feedback_id = b.feedback_id AND a.level < b.level {best_worst})
        UNION ALL
        SELECT [feedback_id], request_id, 'ranking', NULL, NULL, NULL, NULL, NULL, NULL, {common},
               CASE WHEN len(coalesce(ranking, [])) = 1 THEN 'tie' ELSE 'incomplete' END
        FROM judgments WHERE reason IS NULL AND kind = 'RANKING' AND len(coalesce(ranking, [])) <= 1
        UNION ALL
        -- scores of one key by one scorer on the candidates of a request
        (WITH per_candidate AS (
            SELECT request_id, key, source_type,
                   concat_ws('|', source.type, source.model, source.model_version) AS scorer,
                   candidate_id, avg(score) AS score, list(feedback_id ORDER BY feedback_id) AS feedback_ids,
                   max(judged_at_ms) AS judged_at_ms,
                   bool_and(config.min IS NOT NULL AND config.max IS NOT NULL) AS ranged,
                   min(config.min) AS lo, max(config.max) AS hi, bool_and(score IN (0, 1)) AS binary
            FROM judgments
            WHERE reason IS NULL AND kind = 'SCORE' AND score IS NOT NULL AND candidate_id IS NOT NULL
            GROUP BY request_id, key, source_type, scorer, candidate_id
         )
         SELECT list_concat(a.feedback_ids, b.feedback_ids), a.request_id, 'score', a.candidate_id,
                b.candidate_id, NULL,
                round({scale} * CASE
                    WHEN a.ranged AND b.ranged AND greatest(a.hi, b.hi) > least(a.lo, b.lo)
                        THEN least(1.0, (a.score - b.score) / (greatest(a.hi, b.hi) - least(a.lo, b.lo)))
                    WHEN a.binary AND b.binary THEN a.score - b.score
                    ELSE tanh((a.score - b.score) / 2) END, 6),
                a.score, b.score, a.key, a.source_type,
                greatest(a.judged_at_ms, b.judged_at_ms),
                CASE WHEN a.score = b.score THEN 'tie'
                     WHEN a.score - b.score < {float(ws.config.min_margin)!r} THEN 'below_min_margin' END
         FROM per_candidate a JOIN per_candidate b
           ON a.request_id = b.request_id AND a.key = b.key AND a.scorer = b.scorer
          AND (a.score > b.score OR (a.score = b.score AND a.candidate_id < b.candidate_id)))
        UNION ALL
        -- corrections: the corrected output beats the candidate it corrects
        SELECT [feedback_id], request_id, 'correction', NULL, candidate_id, correction, {scale}, NULL, NULL,
               {common}, NULL
        FROM judgments WHERE reason IS NULL AND correction IS NOT NULL AND candidate_id IS NOT NULL
        """
    )
    ws.count_reasons("derived")
    for derivation, n in ws.rows(
        "SELECT derivation, count(*) FROM derived WHERE reason IS NULL GROUP BY derivation ORDER BY derivation"
    ):
        ws.stage_counts[f"pairs_{derivation}"] = int(n)


def validate(ws: Workspace) -> None:
    """Stage 6: ``pairs``, the derived pairs joined to their candidates, with content ids and the
    seeded hash ``h``; the first failing check is the drop reason."""
    f = ws.config.filters
    checks = [
        ("(d.derivation <> 'correction' AND c.idx IS NULL) OR r.idx IS NULL", "unknown_candidate"),
    ]
    if f.models:
        models = sql_in(f.models)
        checks.append(
            (f"NOT (r.model_name IN ({models}) AND (d.derivation = 'correction' OR c.model_name IN ({models})))",
             "filtered_model")
        )  # fmt: skip
    if f.model_versions:
        versions = sql_in(f.model_versions)
        checks.append(
            (f"NOT (coalesce(r.model_version IN ({versions}), FALSE) AND (d.derivation = 'correction' "
             f"OR coalesce(c.model_version IN ({versions}), FALSE)))", "filtered_model_version")
        )  # fmt: skip
    checks += [
        (
            f"d.derivation = 'score' AND d.score_chosen - d.score_rejected < {float(ws.config.min_margin)!r}",
            "below_min_margin",
        ),
        (
            "q.prompt_empty OR r.empty OR (d.derivation = 'correction' AND NOT has_text(d.correction)) "
            "OR (d.derivation <> 'correction' AND c.empty)",
            "empty",
        ),
        ("chosen_md5 = r.text_md5", "identical"),
    ]
    seed = sql_string(f"{ws.config.seed}:")
    ws.execute(
        f"""
        CREATE TEMP TABLE pairs AS
        SELECT *, md5_number({seed} || pair_id) AS h FROM (
        SELECT *, md5(prompt_id || ':' || chosen_md5 || ':' || rejected_md5) AS pair_id
        FROM (
            SELECT d.* EXCLUDE (reason), q.prompt_id, q.split, q.src AS ctx_src, q.part AS ctx_part,
                   q.off AS ctx_off,
                   c.idx AS chosen_idx, r.idx AS rejected_idx,
                   CASE WHEN d.derivation = 'correction' THEN md5(d.correction) ELSE c.text_md5 END AS chosen_md5,
                   r.text_md5 AS rejected_md5,
                   c.model_name AS chosen_model, c.model_version AS chosen_model_version,
                   r.model_name AS rejected_model, r.model_version AS rejected_model_version,
                   c.shown_at AS chosen_shown_at, r.shown_at AS rejected_shown_at,
                   {reason_case(checks)} AS reason
            FROM derived d
            JOIN requests q USING (request_id)
            LEFT JOIN cands c ON c.request_id = d.request_id AND c.candidate_id = d.chosen_id
            LEFT JOIN cands r ON r.request_id = d.request_id AND r.candidate_id = d.rejected_id
            WHERE d.reason IS NULL
        ))
        """
    )
    ws.count_reasons("pairs")
    ws.stage_counts["pairs_valid"] = ws.scalar("SELECT count(*) FROM pairs WHERE reason IS NULL")
