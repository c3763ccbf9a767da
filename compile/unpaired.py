"""Single labelled completions for the ``trl_unpaired`` (KTO) format, from pairs and judgments."""

from __future__ import annotations

from prefpair.compile.sql import sql_string
from prefpair.compile.workspace import Workspace


def unpaired(ws: Workspace) -> None:
    """Single labelled completions: each selected pair's chosen (true) and rejected (false),
    both outputs of a both-bad judgment (false), and scores on a known scale (above its
    middle: true; below: false). A completion labelled both ways is dropped; duplicates collapse.
    """
    ws.execute(
        """
        CREATE TEMP TABLE unpaired_raw AS
        SELECT request_id, ctx_src, ctx_part, ctx_off, prompt_id, split, chosen_idx AS idx, correction,
               chosen_md5 AS completion_md5, TRUE AS label, derivation, feedback_ids, source_type,
               chosen_model AS model, chosen_model_version AS model_version, judged_at_ms
        FROM pairs WHERE reason IS NULL
        UNION ALL
        SELECT request_id, ctx_src, ctx_part, ctx_off, prompt_id, split, rejected_idx, NULL, rejected_md5, FALSE,
               derivation, feedback_ids, source_type, rejected_model, rejected_model_version, judged_at_ms
        FROM pairs WHERE reason IS NULL
        UNION ALL
        SELECT d.request_id, q.src, q.part, q.off, q.prompt_id, q.split, c.idx, NULL, c.text_md5, FALSE,
               'both_bad', d.feedback_ids, d.source_type, c.model_name, c.model_version, d.judged_at_ms
        FROM derived d JOIN requests q USING (request_id)
        JOIN cands c ON c.request_id = d.request_id AND c.candidate_id IN (d.chosen_id, d.rejected_id)
        WHERE d.reason = 'both_bad' AND NOT c.empty AND NOT q.prompt_empty
        UNION ALL
        SELECT j.request_id, q.src, q.part, q.off, q.prompt_id, q.split, c.idx, NULL, c.text_md5,
               j.score > (coalesce(j.config.min, 0) + coalesce(j.config.max, 1)) / 2, 'score', [j.feedback_id],
               j.source_type, c.model_name, c.model_version, j.judged_at_ms
        FROM judgments j JOIN requests q USING (request_id)
        JOIN cands c ON c.request_id = j.request_id AND c.candidate_id = j.candidate_id
        WHERE j.reason IS NULL AND j.kind = 'SCORE' AND j.score IS NOT NULL AND NOT c.empty AND NOT q.prompt_empty
          AND j.score <> (coalesce(j.config.min, 0) + coalesce(j.config.max, 1)) / 2
          AND ((j.config.min IS NOT NULL AND j.config.max IS NOT NULL) OR j.score IN (0, 1))
        """
    )
    ws.execute(
        """
        CREATE TEMP TABLE contradictory_completions AS
        SELECT prompt_id, completion_md5 FROM unpaired_raw
        GROUP BY prompt_id, completion_md5 HAVING count(DISTINCT label) > 1
        """
    )
    ws.stage_counts["unpaired_contradictory"] = ws.scalar(
        "SELECT count(*) FROM unpaired_raw SEMI JOIN contradictory_completions USING (prompt_id, completion_md5)"
    )
    seed = sql_string(f"{ws.config.seed}:")
    emitted = ws.emitted("unpaired")
    ws.execute(
        f"""
        CREATE TEMP TABLE unpaired AS
        SELECT *, md5_number({seed} || example_id) AS h FROM (
            SELECT *, md5(prompt_id || ':' || completion_md5 || ':' || label::VARCHAR) AS example_id
            FROM unpaired_raw ANTI JOIN contradictory_completions USING (prompt_id, completion_md5)
            QUALIFY row_number() OVER (
                PARTITION BY prompt_id, completion_md5, label
                ORDER BY judged_at_ms DESC, feedback_ids, derivation, idx) = 1
        )
        {f"ANTI JOIN {emitted} e ON e.id = example_id" if emitted else ""}
        """
    )
    ws.output(
        "final_unpaired",
        f"""
        SELECT u.split, u.h, u.example_id, u.prompt_id, u.request_id, u.feedback_ids, u.derivation, u.source_type,
               u.model, u.model_version, u.label, prompt_text(w.prompt, w.messages) AS prompt_text,
               w.system_prompt, w.messages AS prompt_messages,
               CASE WHEN u.correction IS NOT NULL THEN u.correction ELSE candidate_text(w.candidates[u.idx]) END
                   AS completion_text,
               w.candidates[u.idx].candidate_id AS candidate_id
        FROM unpaired u JOIN {ws.wide_source()} w
          ON w.request_id = u.request_id AND w.src = u.ctx_src AND w.part = u.ctx_part AND w.off = u.ctx_off
        """,
        "h, example_id",
    )
    ws.stage_counts["unpaired_examples"] = ws.scalar("SELECT count(*) FROM unpaired")
