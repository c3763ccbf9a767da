"""Stages 1 to 3: the feedback events, their resolution to live judgments, and the requests they judge.

Resolution is :mod:`prefpair.schemas.resolution`'s rule, shared with the service and the report.
The context stage reads each judged request's inference once (prompt, candidates, ...) into the
``requests`` and ``cands`` tables the later stages join, and gives each request its split.
"""

from __future__ import annotations

from prefpair.compile.sampling import PROMPT_BUCKET, split_case
from prefpair.compile.sql import sql_string
from prefpair.compile.workspace import Workspace
from prefpair.schemas import resolution

# The judgment fields the stages read, merged by resolution.
RESOLVED_FIELDS = (
    "key", "kind", "outcome", "chosen_id", "rejected_id", "ranking", "candidate_id", "score", "correction", "config",
    "source",
)  # fmt: skip


def events(ws: Workspace) -> None:
    """Stage 1: ``events``, the narrow columns of joined and orphaned feedback."""
    columns = (
        "feedback_event_id, feedback_id, op, request_id, feedback_timestamp_ms, feedback_partition, "
        f"feedback_offset, {', '.join(RESOLVED_FIELDS)}"
    )
    ws.execute(
        f"""
        CREATE TEMP TABLE events AS
        SELECT * FROM (
            SELECT {columns}, TRUE AS joined FROM {ws.log_table("feedback")}
            UNION ALL
            SELECT {columns}, FALSE AS joined FROM {ws.log_table("orphans")}
        )
        """
    )
    ws.stage_counts["feedback_rows"] = ws.scalar(f"SELECT count(*) FROM {ws.log_table('feedback')}")
    ws.stage_counts["orphan_rows"] = ws.scalar(f"SELECT count(*) FROM {ws.log_table('orphans')}")
    ws.stage_counts["feedback_events"] = ws.scalar("SELECT count(*) FROM events")


def resolve(ws: Workspace) -> None:
    """The live judgments (:mod:`prefpair.schemas.resolution`); the others count as drops.

    Most feedback ids have one event: it resolves to itself (a CREATE is live with its own
    fields, a lone DELETE is deleted, a lone UPDATE has no CREATE), so only the ids with more
    than one event go through the rule's ordering and merge (a window sort and a grouped merge
    over every event otherwise). Same result as resolving all of them.
    """
    ws.execute(
        """
        CREATE TEMP TABLE single_events AS
        SELECT * FROM events SEMI JOIN (
            SELECT feedback_id FROM events GROUP BY feedback_id HAVING count(*) = 1
        ) USING (feedback_id)
        """
    )
    ws.execute(
        f"""
        CREATE TEMP TABLE ordered AS
        {resolution.ordered_events_sql("(SELECT * FROM events ANTI JOIN single_events USING (feedback_id)) e")}
        """
    )
    ws.execute(f"CREATE TEMP TABLE feedback_status AS {resolution.feedback_status_sql('ordered')}")
    fields = ", ".join(RESOLVED_FIELDS)
    ws.execute(
        f"""
        CREATE TEMP TABLE resolved AS
        SELECT feedback_id, request_id, modified_ms AS judged_at_ms, {fields}
        FROM ({resolution.merged_feedback_sql("ordered", "feedback_status", RESOLVED_FIELDS)})
        UNION ALL
        SELECT feedback_id, request_id, feedback_timestamp_ms, {fields} FROM single_events WHERE op = 'CREATE'
        """
    )
    lone = {resolution.DELETED: "DELETE", resolution.UPDATE_WITHOUT_CREATE: "UPDATE"}
    for reason, op in lone.items():
        ws.drops[reason] = ws.scalar(
            f"SELECT count(*) FROM feedback_status WHERE status = {sql_string(reason)}"
        ) + ws.scalar(f"SELECT count(*) FROM single_events WHERE op = {sql_string(op)}")
    ws.stage_counts["feedback_ids"] = ws.scalar("SELECT count(*) FROM feedback_status") + ws.scalar(
        "SELECT count(*) FROM single_events"
    )
    ws.stage_counts["judgments_live"] = ws.scalar("SELECT count(*) FROM resolved")
    ws.execute("DROP TABLE ordered")
    ws.execute("DROP TABLE single_events")


def context(ws: Workspace) -> None:
    """Stage 3: ``requests`` (each judged request's prompt id, the filters' columns, its split) and
    ``cands`` (its candidates), from one wide read of the rows carrying inferences."""
    # The first joined row of each judged request carries its inference; feedback that was
    # orphaned may find it in the inference table if it landed after the grace.
    ws.execute(
        """
        CREATE TEMP TABLE context_rows AS
        SELECT request_id, 'f' AS src, min({'part': feedback_partition, 'off': feedback_offset}) AS at
        FROM events
        WHERE joined AND request_id IN (SELECT request_id FROM resolved)
        GROUP BY request_id
        """
    )
    missing = ws.scalar(
        "SELECT count(*) FROM (SELECT DISTINCT request_id FROM resolved) ANTI JOIN context_rows USING (request_id)"
    )
    if missing and ws.files.get("inference"):
        ws.use_inference = True
        ws.execute(
            f"""
            INSERT INTO context_rows
            SELECT request_id, 'i', min({{'part': inference_partition, 'off': inference_offset}})
            FROM {ws.log_table("inference")}
            WHERE request_id IN (SELECT request_id FROM resolved ANTI JOIN context_rows USING (request_id))
            GROUP BY request_id
            """
        )
    ws.execute(
        f"""
        CREATE TEMP TABLE ctx AS
        -- The prompt is what the model saw: the system prompt is part of it (same question under
        -- another system prompt is another prompt, for dedup, contradictions and the split).
        SELECT request_id, src, part, off,
               sha256(coalesce(system_prompt, '') || chr(0) || prompt_text) AS prompt_id,
               NOT has_text(prompt_text) AS prompt_empty, user_id, environment, tags, presentation_order,
               list_transform(candidates, lambda c: {{
                   'candidate_id': c.candidate_id, 'text_md5': md5(candidate_text(c)),
                   'empty': NOT has_text(candidate_text(c)), 'model_name': c.model_name,
                   'model_version': c.model_version}}) AS candidates
        FROM (
            SELECT w.*, prompt_text(w.prompt, w.messages) AS prompt_text
            FROM {ws.wide_source()} w
            SEMI JOIN context_rows r
              ON w.request_id = r.request_id AND w.src = r.src AND w.part = r.at.part AND w.off = r.at.off
        )
        """
    )
    ws.execute(
        f"""
        CREATE TEMP TABLE requests AS
        SELECT request_id, src, part, off, prompt_id, prompt_empty, user_id, environment, tags,
               {split_case(ws.config.splits)} AS split
        FROM (SELECT *, {PROMPT_BUCKET} AS bucket FROM ctx)
        """
    )
    ws.execute(
        """
        CREATE TEMP TABLE cands AS
        SELECT request_id, c.candidate_id, idx, c.text_md5, c.empty, c.model_name, c.model_version,
               list_position(presentation_order, c.candidate_id) AS shown_at
        FROM (SELECT request_id, presentation_order, unnest(candidates) AS c,
                     generate_subscripts(candidates, 1) AS idx FROM ctx)
        """
    )
    ws.execute("DROP TABLE ctx")
    ws.stage_counts["requests"] = ws.scalar("SELECT count(*) FROM requests")
