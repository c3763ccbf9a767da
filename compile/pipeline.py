"""The compile as DuckDB SQL over the committed Parquet log, one stage per method.

Stages, in order (each keeps its rows in a temp table; drops are rows with a ``reason``):

1. **events**: the narrow feedback columns of joined and orphaned feedback (an event seen twice
   changes nothing: resolution picks one of two equal rows).
2. **resolution** (:mod:`prefpair.schemas.resolution`, shared with the service and the report):
   per ``feedback_id``, events in (timestamp, partition, offset) order. The judgment is live
   when its latest CREATE comes after its latest DELETE; its fields are the latest CREATE's,
   overlaid by the non-null fields of each later UPDATE (a null keeps the earlier value).
   Deleted ones and UPDATEs without a CREATE are drops.
3. **context**: one wide read of the rows that carry each request's inference (prompt, system
   prompt, messages, candidates...); feedback whose inference never landed is joined to the
   inference table when it arrived later, else dropped as ``no_inference``.
4. **filters** on judgments (time, source type, key, environment, user, tags).
5. **derivation** of (chosen, rejected) pairs: pairwise PREFERRED; rankings (all pairs or best
   against worst); scores of one key and one scorer on candidates of a request (the mean per
   candidate, difference >= ``min_margin`` and > 0); corrections (the correction against the
   candidate it corrects). Ties and both-bad give no pair. Each pair's ``margin`` is the
   strength of its preference in [0, 1] times ``margin_scale`` (the rule per derivation is the
   ``include_margin`` description in :mod:`prefpair.compile.config`).
6. **validation** per pair: unknown candidate, model filters, margin, empty, identical.
7. **cleaning**: contradictions on one prompt and pair of outputs (policy), exact duplicates.
8. **sampling** (seeded): cap per prompt, position balance, total cap; stratified round-robin.
9. **split** by prompt hash; **incremental**: pairs emitted by earlier runs are left out.

Pair ids hash content (prompt, chosen text, rejected text), so a duplicate is the same id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb

from prefpair.compile.config import CompileConfig
from prefpair.schemas import resolution
from prefpair.schemas.log import FEEDBACK_LOG, INFERENCE_LOG, ORPHAN_LOG

log = logging.getLogger(__name__)

# The judgment fields the stages read, merged by resolution.
RESOLVED_FIELDS = (
    "key", "kind", "outcome", "chosen_id", "rejected_id", "ranking", "candidate_id", "score", "correction", "config",
    "source",
)  # fmt: skip

# Drop reasons in the order the stages apply them (the manifest lists them in this order).
DROP_REASONS = (
    "deleted",
    "update_without_create",
    "no_inference",
    "filtered_time",
    "filtered_source_type",
    "filtered_key",
    "filtered_environment",
    "filtered_user",
    "filtered_tag",
    "tie",
    "both_bad",
    "incomplete",
    "unknown_candidate",
    "filtered_model",
    "filtered_model_version",
    "below_min_margin",
    "empty",
    "identical",
    "contradictory",
    "duplicate",
    "cap_per_prompt",
    "position_balance",
    "max_pairs",
)


MACROS = (
    # Whether a string holds anything but whitespace (a regex search stops at the first such char: no copy).
    r"CREATE OR REPLACE TEMP MACRO has_text(s) AS coalesce(regexp_matches(s, '\S'), FALSE)",
    # The text of a candidate: its text, else its messages' contents.
    "CREATE OR REPLACE TEMP MACRO candidate_text(c) AS coalesce(c.text, "
    "array_to_string(list_transform(c.messages, lambda m: m.content), chr(10) || chr(10)), '')",
    # The prompt as text: the prompt, else the messages' contents.
    "CREATE OR REPLACE TEMP MACRO prompt_text(prompt, messages) AS CASE WHEN has_text(prompt) "
    "THEN prompt ELSE coalesce(array_to_string(list_transform(messages, lambda m: m.content), chr(10) || chr(10)), '') "
    "END",
    # Chat messages {role, content}: the given ones, else one message of `role` holding `text`.
    "CREATE OR REPLACE TEMP MACRO chat(messages, role, text) AS CASE WHEN len(coalesce(messages, [])) > 0 "
    "THEN list_transform(messages, lambda m: {'role': m.role, 'content': m.content}) "
    "ELSE [{'role': role, 'content': text}] END",
    # A conversation as text: one 'Role: content' block per message, blank-line separated, then 'Assistant:'.
    "CREATE OR REPLACE TEMP MACRO transcript(conversation) AS array_to_string(list_concat("
    "list_transform(conversation, lambda m: upper(left(m.role, 1)) || substr(m.role, 2) || ': ' || m.content), "
    "['Assistant:']), chr(10) || chr(10))",
)


def sql_string(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def sql_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(sql_string(v) for v in values) + "]"


class Pipeline:
    """Runs the stages on one DuckDB connection; counts land in ``stage_counts`` / ``drop_counts``."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        config: CompileConfig,
        files: dict[str, list[Path]],
        emitted_files: Sequence[Path] = (),
    ) -> None:
        self.con = con
        self.config = config
        self.files = files
        self.emitted_files = list(emitted_files)
        self.stage_counts: dict[str, int] = {}
        self.drops: dict[str, int] = {}
        self.use_inference = False
        self.outputs: dict[str, tuple[str, str]] = {}
        for macro in MACROS:
            self.con.execute(macro)

    # ------------------------------------------------------------------ helpers
    def _exec(self, sql: str) -> None:
        started = time.monotonic()
        self.con.execute(sql)
        log.debug("compile: %.2f s  %s", time.monotonic() - started, " ".join(sql.split())[:100])

    def _scalar(self, sql: str) -> int:
        rows = self.con.execute(sql).fetchall()
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def _count_reasons(self, table: str) -> None:
        for reason, n in self.con.execute(
            f"SELECT reason, count(*) FROM {table} WHERE reason IS NOT NULL GROUP BY reason"
        ).fetchall():
            self.drops[reason] = self.drops.get(reason, 0) + int(n)

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        log.info("compile: %s done in %.1f s", name, time.monotonic() - started)

    def _source(self, table: str) -> str:
        """A FROM clause reading one log table's committed files (or an empty table of its schema)."""
        paths = self.files.get(table, [])
        if paths:
            return f"read_parquet({sql_list([str(p) for p in paths])}, hive_partitioning=false, union_by_name=true)"
        schema = {"feedback": FEEDBACK_LOG, "orphans": ORPHAN_LOG, "inference": INFERENCE_LOG}[table]
        name = f"empty_{table}"
        self.con.register(name, schema.empty_table())
        return name

    @property
    def drop_counts(self) -> dict[str, int]:
        return {r: self.drops[r] for r in DROP_REASONS if self.drops.get(r)}

    # ------------------------------------------------------------------ run
    def run(self) -> None:
        with self._stage("events"):
            self.events()
        with self._stage("resolution"):
            self.resolve()
        with self._stage("context"):
            self.context()
        with self._stage("filters"):
            self.judgments()
        with self._stage("derivation"):
            self.derive()
        with self._stage("validation"):
            self.validate()
        with self._stage("cleaning"):
            self.clean()
        with self._stage("sampling"):
            self.sample()
        with self._stage("selection"):
            self.select()
        if "trl_unpaired" in self.config.formats:
            with self._stage("unpaired"):
                self.unpaired()

    # ------------------------------------------------------------------ 1. events
    def events(self) -> None:
        columns = (
            "feedback_event_id, feedback_id, op, request_id, feedback_timestamp_ms, feedback_partition, "
            f"feedback_offset, {', '.join(RESOLVED_FIELDS)}"
        )
        self._exec(
            f"""
            CREATE TEMP TABLE events AS
            SELECT * FROM (
                SELECT {columns}, TRUE AS joined FROM {self._source("feedback")}
                UNION ALL
                SELECT {columns}, FALSE AS joined FROM {self._source("orphans")}
            )
            """
        )
        self.stage_counts["feedback_rows"] = self._scalar(f"SELECT count(*) FROM {self._source('feedback')}")
        self.stage_counts["orphan_rows"] = self._scalar(f"SELECT count(*) FROM {self._source('orphans')}")
        self.stage_counts["feedback_events"] = self._scalar("SELECT count(*) FROM events")

    # ------------------------------------------------------------------ 2. resolution
    def resolve(self) -> None:
        """The live judgments (:mod:`prefpair.schemas.resolution`); the others count as drops."""
        self._exec(f"CREATE TEMP TABLE ordered AS {resolution.ordered_events_sql('events')}")
        self._exec(f"CREATE TEMP TABLE feedback_status AS {resolution.feedback_status_sql('ordered')}")
        self._exec(
            f"""
            CREATE TEMP TABLE resolved AS
            SELECT feedback_id, request_id, modified_ms AS judged_at_ms, {", ".join(RESOLVED_FIELDS)}
            FROM ({resolution.merged_feedback_sql("ordered", "feedback_status", RESOLVED_FIELDS)})
            """
        )
        for reason in (resolution.DELETED, resolution.UPDATE_WITHOUT_CREATE):
            self.drops[reason] = self._scalar(
                f"SELECT count(*) FROM feedback_status WHERE status = {sql_string(reason)}"
            )
        self.stage_counts["feedback_ids"] = self._scalar("SELECT count(*) FROM feedback_status")
        self.stage_counts["judgments_live"] = self._scalar("SELECT count(*) FROM resolved")
        self._exec("DROP TABLE ordered")

    # ------------------------------------------------------------------ 3. context
    def context(self) -> None:
        # The first joined row of each judged request carries its inference; feedback that was
        # orphaned may find it in the inference table if it landed after the grace.
        self._exec(
            """
            CREATE TEMP TABLE context_rows AS
            SELECT request_id, 'f' AS src, min({'part': feedback_partition, 'off': feedback_offset}) AS at
            FROM events
            WHERE joined AND request_id IN (SELECT request_id FROM resolved)
            GROUP BY request_id
            """
        )
        missing = self._scalar(
            "SELECT count(*) FROM (SELECT DISTINCT request_id FROM resolved) ANTI JOIN context_rows USING (request_id)"
        )
        if missing and self.files.get("inference"):
            self.use_inference = True
            self._exec(
                f"""
                INSERT INTO context_rows
                SELECT request_id, 'i', min({{'part': inference_partition, 'off': inference_offset}})
                FROM {self._source("inference")}
                WHERE request_id IN (SELECT request_id FROM resolved ANTI JOIN context_rows USING (request_id))
                GROUP BY request_id
                """
            )
        self._exec(
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
                FROM {self.wide_source()} w
                SEMI JOIN context_rows r
                  ON w.request_id = r.request_id AND w.src = r.src AND w.part = r.at.part AND w.off = r.at.off
            )
            """
        )
        splits = list(self.config.splits.items())
        bounds, total = [], 0.0
        for name, fraction in splits[:-1]:
            total += fraction
            bounds.append(f"WHEN bucket < {total!r} THEN {sql_string(name)}")
        split_case = (
            f"CASE {' '.join(bounds)} ELSE {sql_string(splits[-1][0])} END" if bounds else sql_string(splits[-1][0])
        )
        self._exec(
            f"""
            CREATE TEMP TABLE requests AS
            SELECT request_id, src, part, off, prompt_id, prompt_empty, user_id, environment, tags,
                   {split_case} AS split
            FROM (SELECT *, ('0x' || substr(prompt_id, 1, 8))::BIGINT / 4294967296.0 AS bucket FROM ctx)
            """
        )
        self._exec(
            """
            CREATE TEMP TABLE cands AS
            SELECT request_id, c.candidate_id, idx, c.text_md5, c.empty, c.model_name, c.model_version,
                   list_position(presentation_order, c.candidate_id) AS shown_at
            FROM (SELECT request_id, presentation_order, unnest(candidates) AS c,
                         generate_subscripts(candidates, 1) AS idx FROM ctx)
            """
        )
        self._exec("DROP TABLE ctx")
        self.stage_counts["requests"] = self._scalar("SELECT count(*) FROM requests")

    def wide_source(self) -> str:
        """Every log row that carries an inference, as (src, part, off, request_id, inference columns)."""
        columns = (
            "request_id, system_prompt, prompt, messages, candidates, presentation_order, user_id, environment, tags"
        )
        parts = [
            f"SELECT 'f' AS src, feedback_partition AS part, feedback_offset AS off, {columns} "
            f"FROM {self._source('feedback')}"
        ]
        if self.use_inference:
            parts.append(
                f"SELECT 'i', inference_partition, inference_offset, {columns} FROM {self._source('inference')}"
            )
        return "(" + " UNION ALL ".join(parts) + ")"

    # ------------------------------------------------------------------ 4. filters
    def judgments(self) -> None:
        f = self.config.filters
        checks = [("q.request_id IS NULL", "no_inference")]
        if f.since_ms is not None:
            checks.append((f"r.judged_at_ms < {int(f.since_ms)}", "filtered_time"))
        if f.until_ms is not None:
            checks.append((f"r.judged_at_ms >= {int(f.until_ms)}", "filtered_time"))
        if f.source_types:
            checks.append((f"NOT coalesce(r.source.type IN ({_in(f.source_types)}), FALSE)", "filtered_source_type"))
        if f.keys:
            checks.append((f"NOT coalesce(r.key IN ({_in(f.keys)}), FALSE)", "filtered_key"))
        if f.environments:
            checks.append((f"NOT coalesce(q.environment IN ({_in(f.environments)}), FALSE)", "filtered_environment"))
        if f.users:
            checks.append((f"NOT coalesce(q.user_id IN ({_in(f.users)}), FALSE)", "filtered_user"))
        if f.tags:
            checks.append((f"NOT list_has_any(q.tags, {sql_list(f.tags)})", "filtered_tag"))
        self._exec(
            f"""
            CREATE TEMP TABLE judgments AS
            SELECT r.*, r.source.type AS source_type, {_case(checks)} AS reason
            FROM resolved r LEFT JOIN requests q USING (request_id)
            """
        )
        self._count_reasons("judgments")
        self.stage_counts["judgments_kept"] = self._scalar("SELECT count(*) FROM judgments WHERE reason IS NULL")

    # ------------------------------------------------------------------ 5. derivation
    def derive(self) -> None:
        common = "key, source_type, judged_at_ms"
        scale = f"{float(self.config.margin_scale)!r}::DOUBLE"  # the margin of a full-strength preference
        best_worst = "AND a.level = 1 AND b.level = a.n_levels" if self.config.rankings == "best_worst" else ""
        self._exec(
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
                         WHEN a.score - b.score < {float(self.config.min_margin)!r} THEN 'below_min_margin' END
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
        self._count_reasons("derived")
        for derivation, n in self.con.execute(
            "SELECT derivation, count(*) FROM derived WHERE reason IS NULL GROUP BY derivation ORDER BY derivation"
        ).fetchall():
            self.stage_counts[f"pairs_{derivation}"] = int(n)

    # ------------------------------------------------------------------ 6. validation
    def validate(self) -> None:
        f = self.config.filters
        checks = [
            ("(d.derivation <> 'correction' AND c.idx IS NULL) OR r.idx IS NULL", "unknown_candidate"),
        ]
        if f.models:
            models = _in(f.models)
            checks.append(
                (f"NOT (r.model_name IN ({models}) AND (d.derivation = 'correction' OR c.model_name IN ({models})))",
                 "filtered_model")
            )  # fmt: skip
        if f.model_versions:
            versions = _in(f.model_versions)
            checks.append(
                (f"NOT (coalesce(r.model_version IN ({versions}), FALSE) AND (d.derivation = 'correction' "
                 f"OR coalesce(c.model_version IN ({versions}), FALSE)))", "filtered_model_version")
            )  # fmt: skip
        checks += [
            (
                f"d.derivation = 'score' AND d.score_chosen - d.score_rejected < {float(self.config.min_margin)!r}",
                "below_min_margin",
            ),
            (
                "q.prompt_empty OR r.empty OR (d.derivation = 'correction' AND NOT has_text(d.correction)) "
                "OR (d.derivation <> 'correction' AND c.empty)",
                "empty",
            ),
            ("chosen_md5 = r.text_md5", "identical"),
        ]
        seed = sql_string(f"{self.config.seed}:")
        self._exec(
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
                       {_case(checks)} AS reason
                FROM derived d
                JOIN requests q USING (request_id)
                LEFT JOIN cands c ON c.request_id = d.request_id AND c.candidate_id = d.chosen_id
                LEFT JOIN cands r ON r.request_id = d.request_id AND r.candidate_id = d.rejected_id
                WHERE d.reason IS NULL
            ))
            """
        )
        self._count_reasons("pairs")
        self.stage_counts["pairs_valid"] = self._scalar("SELECT count(*) FROM pairs WHERE reason IS NULL")

    # ------------------------------------------------------------------ 7. cleaning
    def clean(self) -> None:
        policy = self.config.contradictions
        keep = {
            "majority": "(p.forward AND k.n_forward > k.n_backward) OR (NOT p.forward AND k.n_backward > k.n_forward)",
            "latest": "p.forward = k.latest_forward",
            "drop": "FALSE",
        }[policy]
        self._exec(
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
        self._exec(
            f"""
            UPDATE pairs p SET reason = 'contradictory'
            FROM (SELECT prompt_id, lo, hi, n_forward, n_backward, latest_forward FROM contested) k
            WHERE p.reason IS NULL AND p.prompt_id = k.prompt_id
              AND least(p.chosen_md5, p.rejected_md5) = k.lo AND greatest(p.chosen_md5, p.rejected_md5) = k.hi
              AND NOT ({keep.replace("p.forward", "(p.chosen_md5 < p.rejected_md5)")})
            """
        )
        # Exact duplicates: keep the latest judgment of each pair.
        self._exec(
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
        self.drops["contradictory"] = self._scalar("SELECT count(*) FROM pairs WHERE reason = 'contradictory'")
        self.drops["duplicate"] = self._scalar("SELECT count(*) FROM pairs WHERE reason = 'duplicate'")
        self.stage_counts["pairs_clean"] = self._scalar("SELECT count(*) FROM pairs WHERE reason IS NULL")

    # ------------------------------------------------------------------ 8. sampling
    def sample(self) -> None:
        s = self.config.sampling
        stratum = {
            "source": "coalesce(source_type, '')",
            "model": "coalesce(chosen_model, derivation)",
            None: "''",
        }[s.stratify_by]
        if s.max_pairs_per_prompt is not None:
            self._cap("cap_per_prompt", "prompt_id", stratum, s.max_pairs_per_prompt)
        if s.balance_position:
            self._balance()
        if s.max_pairs is not None:
            self._cap("max_pairs", "NULL", stratum, s.max_pairs)
        self.stage_counts["pairs_sampled"] = self._scalar("SELECT count(*) FROM pairs WHERE reason IS NULL")

    def _cap(self, reason: str, group: str, stratum: str, limit: int) -> None:
        """Keep ``limit`` pairs per ``group``: round-robin over strata, each in seeded hash order."""
        self._exec(
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
        self.drops[reason] = self._scalar(f"SELECT count(*) FROM pairs WHERE reason = {sql_string(reason)}")

    def _balance(self) -> None:
        """As many pairs with the chosen output shown first as shown second (pairs of unknown order stay)."""
        self._exec(
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
        self.drops["position_balance"] = self._scalar("SELECT count(*) FROM pairs WHERE reason = 'position_balance'")

    # ------------------------------------------------------------------ 9. selection
    def select(self) -> None:
        emitted = self._emitted("pair")
        self._exec(
            f"""
            CREATE TEMP TABLE selected AS
            SELECT * FROM pairs {f"ANTI JOIN {emitted} e ON e.id = pair_id" if emitted else ""} WHERE reason IS NULL
            """
        )
        if emitted:
            self.stage_counts["pairs_already_emitted"] = self.stage_counts["pairs_sampled"] - self._scalar(
                "SELECT count(*) FROM selected"
            )
        self._output(
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
            FROM selected s JOIN {self.wide_source()} w
              ON w.request_id = s.request_id AND w.src = s.ctx_src AND w.part = s.ctx_part AND w.off = s.ctx_off
            """,
            "h, pair_id",
        )

    def _output(self, name: str, query: str, order: str) -> None:
        """Make the rows of one output table available as ``self.outputs[name] = (from, order by)``.

        Several formats read the pairs: they are joined to their texts and sorted once, into a
        table whose insertion order the COPYs keep. One format: its COPY runs the query itself.
        """
        readers = sum(1 for f in self.config.formats if (f == "trl_unpaired") == (name == "final_unpaired"))
        if readers > 1:
            self._exec(f"CREATE TEMP TABLE {name} AS {query} ORDER BY split, {order}")
            self.outputs[name] = (name, "")
        else:
            self.outputs[name] = (f"({query})", f"ORDER BY {order}")

    def _emitted(self, kind: str) -> str | None:
        if not self.emitted_files:
            return None
        name = f"emitted_{kind}"
        self._exec(
            f"""
            CREATE OR REPLACE TEMP TABLE {name} AS
            SELECT id FROM read_parquet({sql_list([str(p) for p in self.emitted_files])})
            WHERE kind = {sql_string(kind)}
            """
        )
        return name

    # ------------------------------------------------------------------ unpaired (KTO)
    def unpaired(self) -> None:
        """Single labelled completions: each selected pair's chosen (true) and rejected (false),
        both outputs of a both-bad judgment (false), and scores on a known scale (above its
        middle: true; below: false). A completion labelled both ways is dropped; duplicates collapse.
        """
        self._exec(
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
        self._exec(
            """
            CREATE TEMP TABLE contradictory_completions AS
            SELECT prompt_id, completion_md5 FROM unpaired_raw
            GROUP BY prompt_id, completion_md5 HAVING count(DISTINCT label) > 1
            """
        )
        self.stage_counts["unpaired_contradictory"] = self._scalar(
            "SELECT count(*) FROM unpaired_raw SEMI JOIN contradictory_completions USING (prompt_id, completion_md5)"
        )
        seed = sql_string(f"{self.config.seed}:")
        emitted = self._emitted("unpaired")
        self._exec(
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
        self._output(
            "final_unpaired",
            f"""
            SELECT u.split, u.h, u.example_id, u.prompt_id, u.request_id, u.feedback_ids, u.derivation, u.source_type,
                   u.model, u.model_version, u.label, prompt_text(w.prompt, w.messages) AS prompt_text,
                   w.system_prompt, w.messages AS prompt_messages,
                   CASE WHEN u.correction IS NOT NULL THEN u.correction ELSE candidate_text(w.candidates[u.idx]) END
                       AS completion_text,
                   w.candidates[u.idx].candidate_id AS candidate_id
            FROM unpaired u JOIN {self.wide_source()} w
              ON w.request_id = u.request_id AND w.src = u.ctx_src AND w.part = u.ctx_part AND w.off = u.ctx_off
            """,
            "h, example_id",
        )
        self.stage_counts["unpaired_examples"] = self._scalar("SELECT count(*) FROM unpaired")


def _in(values: Sequence[str]) -> str:
    return ", ".join(sql_string(v) for v in values)


def _case(checks: Sequence[tuple[str, str]]) -> str:
    """``CASE WHEN cond THEN 'reason' ... END``: the first failing check names the drop."""
    if not checks:
        return "NULL::VARCHAR"
    return "CASE " + " ".join(f"WHEN {cond} THEN {sql_string(reason)}" for cond, reason in checks) + " END"
