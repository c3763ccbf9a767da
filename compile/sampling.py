"""Stages 8 and 9: seeded sampling, the split by prompt hash, and the selection of what a run emits.

Sampling caps pairs per prompt and in total (round-robin over strata, each in seeded hash
order) and balances the position of the chosen output. Selection leaves out the pairs earlier
runs emitted (``incremental``) and joins the rest to their texts for the formats.
"""

from __future__ import annotations

from collections.abc import Mapping

from prefpair.compile.sql import sql_string
from prefpair.compile.workspace import Workspace

PROMPT_BUCKET = "prompt_bucket(prompt_id)"
"""A prompt's place in [0, 1): the first 32 bits of its hash (the ``prompt_bucket`` macro of
:mod:`prefpair.compile.sql`). The split goes by it alone, so no prompt is in two splits."""


def split_case(splits: Mapping[str, float]) -> str:
    """The split of a row by its ``bucket`` (:data:`PROMPT_BUCKET`): the fractions in order, the
    last split taking the rest."""
    ordered = list(splits.items())
    bounds, total = [], 0.0
    for name, fraction in ordered[:-1]:
        total += fraction
        bounds.append(f"WHEN bucket < {total!r} THEN {sql_string(name)}")
    return f"CASE {' '.join(bounds)} ELSE {sql_string(ordered[-1][0])} END" if bounds else sql_string(ordered[-1][0])


def sample(ws: Workspace) -> None:
    """Stage 8: the caps and the position balance, as drops in ``pairs``."""
    s = ws.config.sampling
    stratum = {
        "source": "coalesce(source_type, '')",
        "model": "coalesce(chosen_model, derivation)",
        None: "''",
    }[s.stratify_by]
    if s.max_pairs_per_prompt is not None:
        _cap(ws, "cap_per_prompt", "prompt_id", stratum, s.max_pairs_per_prompt)
    if s.balance_position:
        _balance(ws)
    if s.max_pairs is not None:
        _cap(ws, "max_pairs", "NULL", stratum, s.max_pairs)
    ws.stage_counts["pairs_sampled"] = ws.scalar("SELECT count(*) FROM pairs WHERE reason IS NULL")


def _cap(ws: Workspace, reason: str, group: str, stratum: str, limit: int) -> None:
    """Keep ``limit`` pairs per ``group``: round-robin over strata, each in seeded hash order."""
    ws.execute(
        f"""
        UPDATE pairs p SET reason = {sql_string(reason)}
        FROM (
            SELECT pair_id, rank_in_group FROM (
                SELECT pair_id, row_number() OVER (PARTITION BY {group} ORDER BY rank_in_stratum, h, pair_id)
                           AS rank_in_group
                FROM (
                    SELECT pair_id, prompt_id, h,
                           row_number() OVER (PARTITION BY {group}, {stratum} ORDER BY h, pair_id)
                               AS rank_in_stratum
                    FROM pairs WHERE reason IS NULL
                )
            ) WHERE rank_in_group > {int(limit)}
        ) x
        WHERE p.reason IS NULL AND p.pair_id = x.pair_id
        """
    )
    ws.drops[reason] = ws.scalar(f"SELECT count(*) FROM pairs WHERE reason = {sql_string(reason)}")


def _balance(ws: Workspace) -> None:
    """As many pairs with the chosen output shown first as shown second (pairs of unknown order stay)."""
    ws.execute(
        """
        UPDATE pairs p SET reason = 'position_balance'
        FROM (
            SELECT pair_id FROM (
                SELECT pair_id, rank_in_class,
                       count(*) FILTER (WHERE shown_first) OVER () AS n_first,
                       count(*) FILTER (WHERE NOT shown_first) OVER () AS n_second
                FROM (
                    SELECT pair_id, chosen_shown_at < rejected_shown_at AS shown_first,
                           row_number() OVER (PARTITION BY chosen_shown_at < rejected_shown_at ORDER BY h, pair_id)
                               AS rank_in_class
                    FROM pairs
                    WHERE reason IS NULL AND chosen_shown_at IS NOT NULL AND rejected_shown_at IS NOT NULL
                )
            ) WHERE rank_in_class > least(n_first, n_second)
        ) x
        WHERE p.reason IS NULL AND p.pair_id = x.pair_id
        """
    )
    ws.drops["position_balance"] = ws.scalar("SELECT count(*) FROM pairs WHERE reason = 'position_balance'")


def select(ws: Workspace) -> None:
    """Stage 9: ``selected``, the pairs this run emits, and the ``final`` output of them with their texts."""
    emitted = ws.emitted("pair")
    ws.execute(
        f"""
        CREATE TEMP TABLE selected AS
        SELECT * FROM pairs {f"ANTI JOIN {emitted} e ON e.id = pair_id" if emitted else ""} WHERE reason IS NULL
        """
    )
    if emitted:
        ws.stage_counts["pairs_already_emitted"] = ws.stage_counts["pairs_sampled"] - ws.scalar(
            "SELECT count(*) FROM selected"
        )
    ws.output(
        "final",
        f"""
        SELECT s.split, s.h, s.pair_id, s.prompt_id, s.request_id, s.feedback_ids, s.derivation, s.key,
               s.source_type, s.judged_at_ms, s.margin, s.score_chosen, s.score_rejected, s.chosen_id,
               s.rejected_id,
               s.chosen_model, s.chosen_model_version, s.rejected_model, s.rejected_model_version,
               prompt_text(w.prompt, w.messages) AS prompt_text, w.system_prompt, w.messages AS prompt_messages,
               CASE WHEN s.derivation = 'correction' THEN s.correction
                    ELSE candidate_text(w.candidates[s.chosen_idx]) END AS chosen_text,
               CASE WHEN s.derivation = 'correction' THEN NULL
                    ELSE w.candidates[s.chosen_idx].messages END AS chosen_messages,
               candidate_text(w.candidates[s.rejected_idx]) AS rejected_text,
               w.candidates[s.rejected_idx].messages AS rejected_messages
        FROM selected s JOIN {ws.wide_source()} w
          ON w.request_id = s.request_id AND w.src = s.ctx_src AND w.part = s.ctx_part AND w.off = s.ctx_off
        """,
        "h, pair_id",
    )
