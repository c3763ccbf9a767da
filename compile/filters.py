"""What is left out by rule: the filters on judgments (stage 4) and the cleaning of pairs (stage 7).

Filters drop judgments by time, source type, key, environment, user and tag (model filters need
the pair's candidates: :func:`prefpair.compile.derivation.validate`). Cleaning drops
contradictions on one prompt and pair of outputs (by policy) and exact duplicates.
"""

from __future__ import annotations

from prefpair.compile.sql import reason_case, sql_in, sql_list
from prefpair.compile.workspace import Workspace


def filter_judgments(ws: Workspace) -> None:
    """Stage 4: ``judgments``, the live judgments with the reason a filter drops them."""
    f = ws.config.filters
    checks = [("q.request_id IS NULL", "no_inference")]
    if f.since_ms is not None:
        checks.append((f"r.judged_at_ms < {int(f.since_ms)}", "filtered_time"))
    if f.until_ms is not None:
        checks.append((f"r.judged_at_ms >= {int(f.until_ms)}", "filtered_time"))
    if f.source_types:
        checks.append((f"NOT coalesce(r.source.type IN ({sql_in(f.source_types)}), FALSE)", "filtered_source_type"))
    if f.keys:
        checks.append((f"NOT coalesce(r.key IN ({sql_in(f.keys)}), FALSE)", "filtered_key"))
    if f.environments:
        checks.append((f"NOT coalesce(q.environment IN ({sql_in(f.environments)}), FALSE)", "filtered_environment"))
    if f.users:
        checks.append((f"NOT coalesce(q.user_id IN ({sql_in(f.users)}), FALSE)", "filtered_user"))
    if f.tags:
        checks.append((f"NOT list_has_any(q.tags, {sql_list(f.tags)})", "filtered_tag"))
    ws.execute(
        f"""
        CREATE TEMP TABLE judgments AS
        SELECT r.*, r.source.type AS source_type, {reason_case(checks)} AS reason
        FROM resolved r LEFT JOIN requests q USING (request_id)
        """
    )
    ws.count_reasons("judgments")
    ws.stage_counts["judgments_kept"] = ws.scalar("SELECT count(*) FROM judgments WHERE reason IS NULL")


def clean(ws: Workspace) -> None:
    """Stage 7: contradictions (by the ``contradictions`` policy) and exact duplicates, as drops in ``pairs``."""
    policy = ws.config.contradictions
    keep = {
        "majority": "(p.forward AND k.n_forward > k.n_backward) OR (NOT p.forward AND k.n_backward > k.n_forward)",
        "latest": "p.forward = k.latest_forward",
        "drop": "FALSE",
    }[policy]
    ws.execute(
        """
        CREATE TEMP TABLE contested AS
        SELECT prompt_id, lo, hi,
               count(*) FILTER (WHERE forward) AS n_forward,
               count(*) FILTER (WHERE NOT forward) AS n_backward,
               arg_max(forward, {'at': judged_at_ms, 'ids': feedback_ids, 'pair': pair_id}) AS latest_forward
        FROM (
            SELECT prompt_id, least(chosen_md5, rejected_md5) AS lo, greatest(chosen_md5, rejected_md5) AS hi,
                   chosen_md5 < rejected_md5 AS forward, judged_at_ms, feedback_ids, pair_id
            FROM pairs WHERE reason IS NULL
        )
        GROUP BY prompt_id, lo, hi
        HAVING n_forward > 0 AND n_backward > 0
        """
    )
    ws.execute(
        f"""
        UPDATE pairs p SET reason = 'contradictory'
        FROM (SELECT prompt_id, lo, hi, n_forward, n_backward, latest_forward FROM contested) k
        WHERE p.reason IS NULL AND p.prompt_id = k.prompt_id
          AND least(p.chosen_md5, p.rejected_md5) = k.lo AND greatest(p.chosen_md5, p.rejected_md5) = k.hi
          AND NOT ({keep.replace("p.forward", "(p.chosen_md5 < p.rejected_md5)")})
        """
    )
    # Exact duplicates: keep the latest judgment of each pair.
    ws.execute(
        """
        UPDATE pairs p SET reason = 'duplicate'
        FROM (
            SELECT pair_id, derivation, feedback_ids, chosen_id, rejected_id FROM pairs WHERE reason IS NULL
            QUALIFY row_number() OVER (
                PARTITION BY pair_id
                ORDER BY judged_at_ms DESC, feedback_ids, derivation, chosen_id, rejected_id) > 1
        ) d
        WHERE p.reason IS NULL AND p.pair_id = d.pair_id AND p.derivation = d.derivation
          AND p.feedback_ids = d.feedback_ids
          AND p.chosen_id IS NOT DISTINCT FROM d.chosen_id AND p.rejected_id = d.rejected_id
        """
    )
    ws.drops["contradictory"] = ws.scalar("SELECT count(*) FROM pairs WHERE reason = 'contradictory'")
    ws.drops["duplicate"] = ws.scalar("SELECT count(*) FROM pairs WHERE reason = 'duplicate'")
    ws.stage_counts["pairs_clean"] = ws.scalar("SELECT count(*) FROM pairs WHERE reason IS NULL")
