"""Implicit pairs: signals (copy, edit, regenerate, dwell, ...) turned into judgments by declared rules.

The rules live in a small TOML file (:data:`DEFAULT_RULES_FILE` ships the defaults; ``--implicit-rules``
names another) read into :class:`ImplicitRules`. Each rule reads one signal kind, with a confidence
that becomes its pairs' margin. Three hooks in the pipeline:

* :func:`add_judgments`, after resolution: the signals table and the narrow inference columns
  (request, parent request, candidates) give one judgment per implicit preference, added to
  ``resolved`` with the source type ``IMPLICIT:<rule>`` and the key ``implicit:<rule>``; from there
  the usual stages (context, filters, derivation, validation, cleaning, sampling, split) treat them
  like explicit ones. Same-request preferences are pairwise judgments; cross-request ones (a
  regeneration: the child's kept output beats its parent's) and edits are corrections on the
  rejected output (the chosen text comes with the judgment). The parent/child join happens here,
  over the whole log, so a signal or a child request that landed before its parent still counts.
* :func:`weigh`, after derivation: an implicit pair's margin is its rule's confidence times
  ``margin_scale``.
* :func:`finish`, after selection: per rule, judgments, drops and pairs, for the manifest.

``--implicit include`` (default) mixes them with explicit judgments, ``exclude`` leaves them out,
``only`` keeps nothing else. The Spark engine does not derive implicit pairs (the manifest says so).
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Self

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefpair.compile.exceptions import CompileConfigError
from prefpair.compile.sql import sql_string
from prefpair.compile.workspace import Workspace
from prefpair.errors import first_problem

DEFAULT_RULES_FILE = "implicit_rules.toml"
SOURCE_PREFIX = "IMPLICIT:"
"""An implicit pair's ``source_type``: ``IMPLICIT:<rule name>``."""
KEY_PREFIX = "implicit:"

RuleKind = Literal["regenerate", "edit", "copy", "select", "conversion", "dwell"]
BEATS_SHOWN: tuple[RuleKind, ...] = ("copy", "select", "conversion")
"""Kinds whose signal names the output that beats every other output of its request."""


class ImplicitRule(BaseModel):
    """One rule: which signal kind it reads, its confidence, and the kind's thresholds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$", description="the rule's name: source type IMPLICIT:<name>")
    kind: RuleKind
    confidence: float = Field(gt=0.0, le=1.0, allow_inf_nan=False)
    min_dwell_ms: int | None = Field(default=None, ge=0)
    max_other_dwell_ms: int | None = Field(default=None, ge=0)
    min_value: float | None = Field(default=None, allow_inf_nan=False)
    description: str = ""

    @model_validator(mode="after")
    def _thresholds(self) -> Self:
        dwell = (self.min_dwell_ms, self.max_other_dwell_ms)
        if self.kind == "dwell":
            if None in dwell:
                raise ValueError("a dwell rule needs min_dwell_ms and max_other_dwell_ms")
            assert self.min_dwell_ms is not None and self.max_other_dwell_ms is not None
            if self.max_other_dwell_ms >= self.min_dwell_ms:
                raise ValueError("max_other_dwell_ms must be below min_dwell_ms")
        elif dwell != (None, None):
            raise ValueError(f"min_dwell_ms and max_other_dwell_ms apply to dwell rules, not {self.kind}")
        if self.min_value is not None and self.kind != "conversion":
            raise ValueError(f"min_value applies to conversion rules, not {self.kind}")
        return self


class ImplicitRules(BaseModel):
    """The rules of one compile (names unique)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[ImplicitRule, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> Self:
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise ValueError("two rules have the same name")
        return self


def load_rules(path: str | Path | None = None) -> ImplicitRules:
    """The rules in the TOML file ``path`` (None: the shipped defaults); errors name the file and field."""
    where = str(path) if path is not None else DEFAULT_RULES_FILE
    try:
        if path is None:
            text = resources.files("prefpair.compile").joinpath(DEFAULT_RULES_FILE).read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except OSError as exc:
        raise CompileConfigError("implicit_rules", f"cannot read {where}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CompileConfigError("implicit_rules", f"{where} is not TOML: {exc}") from None
    try:
        return ImplicitRules.model_validate(data)
    except pydantic.ValidationError as exc:
        field, reason = first_problem(exc, "rules")
        raise CompileConfigError(f"implicit_rules ({where}): {field}", reason) from None


# --------------------------------------------------------------------------- stages
def add_judgments(ws: Workspace) -> None:
    """After resolution: implicit judgments into ``resolved`` (see the module docstring)."""
    mode = ws.config.implicit
    rules_file = ws.config.implicit_rules or f"(shipped) {DEFAULT_RULES_FILE}"
    section: dict[str, Any] = {"mode": mode, "rules_file": rules_file}
    ws.sections["implicit"] = section
    if mode == "exclude":
        return
    if ws.config.engine != "duckdb":
        section["skipped"] = "implicit pairs are derived on the duckdb engine only"
        return
    rules = load_rules(ws.config.implicit_rules)
    section["rules"] = {rule.name: {"kind": rule.kind, "confidence": rule.confidence} for rule in rules.rules}
    _signals(ws)
    _requests(ws)
    section["signals"] = {str(kind): int(n) for kind, n in ws.rows(
        "SELECT kind, count(*) FROM sig GROUP BY kind ORDER BY kind")}  # fmt: skip
    names = ", ".join(c.split()[0] for c in _RAW_COLUMNS.split(", "))
    parts = [f"SELECT * FROM ({_rule_sql(rule)}) AS r({names})" for rule in rules.rules]
    ws.execute(
        "CREATE TEMP TABLE implicit_raw AS "
        + (" UNION ALL ".join(parts) if parts else _EMPTY_RAW)
    )
    ws.execute(
        f"""
        INSERT INTO resolved BY NAME
        SELECT {sql_string(KEY_PREFIX)} || rule || ':' || basis || coalesce(':' || rejected_id, '') AS feedback_id,
               request_id, judged_at_ms, {sql_string(KEY_PREFIX)} || rule AS key,
               CASE WHEN correction IS NULL THEN 'PAIRWISE' END AS kind,
               CASE WHEN correction IS NULL THEN 'PREFERRED' END AS outcome,
               chosen_id, CASE WHEN correction IS NULL THEN rejected_id END AS rejected_id,
               CASE WHEN correction IS NOT NULL THEN rejected_id END AS candidate_id, correction,
               {{'type': {sql_string(SOURCE_PREFIX)} || rule, 'source_id': source_id, 'model': NULL::VARCHAR,
                 'model_version': NULL::VARCHAR, 'run_id': NULL::VARCHAR}} AS source
        FROM implicit_raw WHERE reason IS NULL
        """
    )
    per_rule: dict[str, dict[str, Any]] = {rule.name: {"judgments": 0, "not_derived": {}} for rule in rules.rules}
    for rule, reason, n in ws.rows(
        "SELECT rule, coalesce(reason, ''), count(*) FROM implicit_raw GROUP BY ALL ORDER BY ALL"
    ):
        entry = per_rule[str(rule)]
        if reason:
            entry["not_derived"][str(reason)] = int(n)
        else:
            entry["judgments"] = int(n)
    section["per_rule"] = per_rule
    if mode == "only":
        explicit = f"NOT starts_with(source.type, {sql_string(SOURCE_PREFIX)})"
        ws.drops["explicit_left_out"] = ws.scalar(f"SELECT count(*) FROM resolved WHERE {explicit}")
        ws.execute(f"DELETE FROM resolved WHERE {explicit}")


def weigh(ws: Workspace) -> None:
    """After derivation: an implicit pair's margin is its rule's confidence times ``margin_scale``."""
    rules = ws.sections.get("implicit", {}).get("rules")
    if not rules:
        return
    scale = float(ws.config.margin_scale)
    cases = " ".join(
        f"WHEN {sql_string(SOURCE_PREFIX + name)} THEN {float(rule['confidence']) * scale!r}"
        for name, rule in rules.items()
    )
    ws.execute(
        f"UPDATE derived SET margin = round(CASE source_type {cases} END, 6) "
        f"WHERE starts_with(source_type, {sql_string(SOURCE_PREFIX)})"
    )


def finish(ws: Workspace) -> None:
    """After selection: per rule, the pairs left after each stage's drops and the pairs this run emits."""
    per_rule = ws.sections.get("implicit", {}).get("per_rule")
    if not per_rule:
        return
    prefix = sql_string(SOURCE_PREFIX)
    for source, reason, n in ws.rows(
        f"SELECT source_type, coalesce(reason, ''), count(*) FROM pairs "
        f"WHERE starts_with(source_type, {prefix}) GROUP BY ALL ORDER BY ALL"
    ):
        entry = per_rule.get(str(source).removeprefix(SOURCE_PREFIX))
        if entry is None:
            continue
        if reason:
            entry.setdefault("pair_drops", {})[str(reason)] = int(n)
    for source, n in ws.rows(
        f"SELECT source_type, count(*) FROM selected WHERE starts_with(source_type, {prefix}) GROUP BY ALL"
    ):
        entry = per_rule.get(str(source).removeprefix(SOURCE_PREFIX))
        if entry is not None:
            entry["pairs"] = int(n)
    for entry in per_rule.values():
        entry.setdefault("pairs", 0)


# --------------------------------------------------------------------------- inputs
def _signals(ws: Workspace) -> None:
    """``sig``: each signal once (the first landing of its id), and ``deleted``: requests a user deleted."""
    ws.execute(
        f"""
        CREATE TEMP TABLE sig AS
        SELECT signal_id, request_id, signal_timestamp_ms AS ts, kind, candidate_id, value, text, dwell_ms,
               source AS source_id
        FROM {ws.log_table("signals")}
        QUALIFY row_number() OVER (PARTITION BY signal_id ORDER BY signal_partition, signal_offset) = 1
        """
    )
    ws.execute("CREATE TEMP TABLE deleted AS SELECT DISTINCT request_id FROM sig WHERE kind = 'delete'")


def _requests(ws: Workspace) -> None:
    """``inf``: the requests the rules look at (signalled, children, parents): parent, time and candidates;
    ``inf_cands``: their candidates, one row each, with their texts."""
    source = ws.log_table("inference")
    columns = {str(row[0]) for row in ws.rows(f"DESCRIBE SELECT * FROM {source}")}
    parent = "parent_request_id" if "parent_request_id" in columns else "NULL::VARCHAR"  # logs older than v2
    ws.execute(
        f"""
        CREATE TEMP TABLE inf_all AS
        SELECT request_id, {parent} AS parent, inference_timestamp_ms AS ts, inference_partition AS part,
               inference_offset AS off
        FROM {source}
        """
    )
    ws.execute(
        f"""
        CREATE TEMP TABLE inf AS
        SELECT i.request_id, i.parent, i.ts, w.candidates
        FROM (
            SELECT * FROM inf_all
            WHERE request_id IN (SELECT request_id FROM sig) OR parent IS NOT NULL
               OR request_id IN (SELECT parent FROM inf_all WHERE parent IS NOT NULL)
            QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY part, off) = 1
        ) i
        JOIN (SELECT request_id, inference_partition AS part, inference_offset AS off, candidates FROM {source}) w
          USING (request_id, part, off)
        """
    )
    ws.execute(
        """
        CREATE TEMP TABLE inf_cands AS
        SELECT request_id, c.candidate_id AS id, candidate_text(c) AS text, n
        FROM (SELECT request_id, unnest(candidates) AS c, len(candidates) AS n FROM inf)
        """
    )
    ws.execute("DROP TABLE inf_all")


# --------------------------------------------------------------------------- rules
_RAW_COLUMNS = (
    "rule VARCHAR, basis VARCHAR, request_id VARCHAR, chosen_id VARCHAR, rejected_id VARCHAR, correction VARCHAR, "
    "judged_at_ms BIGINT, source_id VARCHAR, reason VARCHAR"
)
_EMPTY_RAW = "SELECT * FROM (SELECT " + ", ".join(
    f"NULL::{c.split()[1]} AS {c.split()[0]}" for c in _RAW_COLUMNS.split(", ")
) + ") WHERE FALSE"

_DELETED = "request_id IN (SELECT request_id FROM deleted)"


def _rule_sql(rule: ImplicitRule) -> str:
    """One rule's rows of ``implicit_raw``: a judgment each (``reason`` NULL), or why a signal gave none."""
    name = sql_string(rule.name)
    if rule.kind in BEATS_SHOWN:
        value = f"AND coalesce(s.value >= {float(rule.min_value)!r}, FALSE)" if rule.min_value is not None else ""
        return f"""
        SELECT {name}, s.signal_id, s.request_id, s.candidate_id, o.id, NULL, s.ts, s.source_id,
               CASE WHEN NOT EXISTS (SELECT 1 FROM inf i WHERE i.request_id = s.request_id) THEN 'no_inference'
                    WHEN s.{_DELETED} THEN 'deleted'
                    WHEN s.candidate_id IS NULL THEN 'no_candidate'
                    WHEN NOT EXISTS (SELECT 1 FROM inf_cands k WHERE k.request_id = s.request_id
                                     AND k.id = s.candidate_id) THEN 'unknown_candidate'
                    WHEN o.id IS NULL THEN 'no_other_output' END
        FROM sig s
        LEFT JOIN inf_cands o ON o.request_id = s.request_id AND o.id <> s.candidate_id
        WHERE s.kind = {sql_string(rule.kind)} {value}
        """
    if rule.kind == "edit":
        return f"""
        SELECT {name}, s.signal_id, s.request_id, NULL, s.candidate_id, s.text, s.ts, s.source_id,
               CASE WHEN NOT EXISTS (SELECT 1 FROM inf i WHERE i.request_id = s.request_id) THEN 'no_inference'
                    WHEN s.{_DELETED} THEN 'deleted'
                    WHEN NOT EXISTS (SELECT 1 FROM inf_cands k WHERE k.request_id = s.request_id
                                     AND k.id = s.candidate_id) THEN 'unknown_candidate' END
        FROM sig s WHERE s.kind = 'edit'
        """
    if rule.kind == "dwell":
        return f"""
        SELECT {name}, a.signal_id || '>' || b.signal_id, a.request_id, a.candidate_id, b.candidate_id, NULL,
               greatest(a.ts, b.ts), a.source_id,
               CASE WHEN NOT EXISTS (SELECT 1 FROM inf i WHERE i.request_id = a.request_id) THEN 'no_inference'
                    WHEN a.{_DELETED} THEN 'deleted'
                    WHEN (SELECT count(*) FROM inf_cands k WHERE k.request_id = a.request_id
                          AND k.id IN (a.candidate_id, b.candidate_id)) < 2 THEN 'unknown_candidate' END
        FROM (SELECT request_id, candidate_id, max(dwell_ms) AS dwell, max(ts) AS ts, min(signal_id) AS signal_id,
                     min(source_id) AS source_id
              FROM sig WHERE kind = 'dwell' AND candidate_id IS NOT NULL GROUP BY request_id, candidate_id) a
        JOIN (SELECT request_id, candidate_id, max(dwell_ms) AS dwell, max(ts) AS ts, min(signal_id) AS signal_id
              FROM sig WHERE kind = 'dwell' AND candidate_id IS NOT NULL GROUP BY request_id, candidate_id) b
          ON a.request_id = b.request_id AND a.candidate_id <> b.candidate_id
         AND a.dwell >= {int(rule.min_dwell_ms or 0)} AND b.dwell <= {int(rule.max_other_dwell_ms or 0)}
        """
    # regenerate: the child's kept output beats the parent's regenerated output(s)
    return f"""
    WITH child AS (
        SELECT c.request_id AS child_id, c.parent AS parent_id, c.ts,
               EXISTS (SELECT 1 FROM inf p WHERE p.request_id = c.parent) AS has_parent,
               c.request_id IN (SELECT request_id FROM deleted) OR c.parent IN (SELECT request_id FROM deleted)
                   AS is_deleted,
               coalesce(
                   (SELECT arg_min(s.candidate_id, s.ts) FROM sig s
                    WHERE s.request_id = c.request_id AND s.kind IN ('copy', 'select')),
                   CASE WHEN len(c.candidates) = 1
                         AND NOT EXISTS (SELECT 1 FROM inf g WHERE g.parent = c.request_id)
                         AND NOT EXISTS (SELECT 1 FROM sig s WHERE s.request_id = c.request_id
                                         AND s.kind IN ('abandon', 'regenerate'))
                        THEN c.candidates[1].candidate_id END) AS kept_id,
               (SELECT arg_min(s.candidate_id, s.ts) FROM sig s
                WHERE s.request_id = c.parent AND s.kind = 'regenerate' AND s.candidate_id IS NOT NULL)
                   AS regenerated_id
        FROM inf c WHERE c.parent IS NOT NULL
    ), judged AS (
        SELECT c.*, k.text AS kept_text,
               CASE WHEN NOT has_parent THEN 'parent_missing'
                    WHEN is_deleted THEN 'deleted'
                    WHEN kept_id IS NULL THEN 'not_kept'
                    WHEN k.id IS NULL THEN 'unknown_candidate' END AS reason
        FROM child c LEFT JOIN inf_cands k ON k.request_id = c.child_id AND k.id = c.kept_id
    )
    SELECT {name}, 'child-' || j.child_id, j.parent_id, NULL, p.id, j.kept_text, j.ts, NULL,
           coalesce(j.reason, CASE WHEN p.id IS NULL THEN 'unknown_candidate' END)
    FROM judged j
    LEFT JOIN inf_cands p ON j.reason IS NULL AND p.request_id = j.parent_id
     AND (j.regenerated_id IS NULL OR p.id = j.regenerated_id)
    """
