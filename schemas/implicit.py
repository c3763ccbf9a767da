"""Implicit signals as preferences: the rules (a TOML file) and their SQL, shared by compile and report.

One source of truth for what a signal means: compile turns the rules' preferences into pairs
(:mod:`prefpair.compile.implicit`), the report checks each rule against explicit judgments on the
same requests. :data:`DEFAULT_RULES_FILE` beside this module ships the defaults.

The SQL (DuckDB) runs over two tables the caller names: the log's signals and inference rows. It
builds ``sig`` (each signal once), ``deleted`` (requests a user deleted), ``inf`` / ``inf_cands``
(the requests the rules look at: signalled, children and parents, with their candidates) and
``implicit_raw``: per rule, one row per preference (candidate ``chosen_id`` of ``chosen_request_id``
beats ``rejected_id`` of ``request_id``; ``correction``, when set, is the winning text: an edit, or
the regeneration's kept output, whose request differs) or, with a ``reason``, why a signal or a
child request gave none. The parent/child join is over the whole log, so a
signal or a child that landed before its parent still counts.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal, Self

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefpair.errors import first_problem
from prefpair.schemas.exceptions import ContractError

DEFAULT_RULES_FILE = "implicit_rules.toml"
SOURCE_PREFIX = "IMPLICIT:"
"""An implicit preference's source type: ``IMPLICIT:<rule name>``."""
CANDIDATE_TEXT = (
    "coalesce(c.text, array_to_string(list_transform(c.messages, lambda m: m.content), chr(10) || chr(10)), '')"
)
"""A candidate's text (the compile's ``candidate_text``), written out: the report has no macros."""


class ImplicitRulesError(ContractError):
    """A rules file that cannot be read or breaks the rules' model; names the file, the field and why."""

    def __init__(self, where: str, field: str, reason: str) -> None:
        self.where = where
        self.field = field
        self.reason = reason
        super().__init__(f"implicit rules ({where}): {field}: {reason}")


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
            text = resources.files("prefpair.schemas").joinpath(DEFAULT_RULES_FILE).read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except OSError as exc:
        raise ImplicitRulesError(where, "file", f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ImplicitRulesError(where, "file", f"not TOML: {exc}") from None
    try:
        return ImplicitRules.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ImplicitRulesError(where, *first_problem(exc, "rules")) from None


# --------------------------------------------------------------------------- SQL
def preference_sql(rules: ImplicitRules, signals: str, inference: str, *, has_parent: bool = True) -> list[str]:
    """The statements that build ``implicit_raw`` (and the tables it rests on) from ``signals`` and
    ``inference`` (FROM clauses over the log's tables); ``has_parent``: whether the inference rows
    have ``parent_request_id`` (logs older than inference v2 do not)."""
    names = ", ".join(c.split()[0] for c in _RAW_COLUMNS.split(", "))
    parts = [f"SELECT * FROM ({_rule_sql(rule)}) AS r({names})" for rule in rules.rules]
    return [
        *_signals(signals),
        *_requests(inference, "parent_request_id" if has_parent else "NULL::VARCHAR"),
        "CREATE TEMP TABLE implicit_raw AS " + (" UNION ALL ".join(parts) if parts else _EMPTY_RAW),
    ]


# --------------------------------------------------------------------------- inputs
def _signals(source: str) -> list[str]:
    """``sig``: each signal once (the first landing of its id), and ``deleted``: requests a user deleted."""
    return [
        f"""
        CREATE TEMP TABLE sig AS
        SELECT signal_id, request_id, signal_timestamp_ms AS ts, kind, candidate_id, value, text, dwell_ms,
               source AS source_id
        FROM {source}
        QUALIFY row_number() OVER (PARTITION BY signal_id ORDER BY signal_partition, signal_offset) = 1
        """,
        "CREATE TEMP TABLE deleted AS SELECT DISTINCT request_id FROM sig WHERE kind = 'delete'",
    ]


def _requests(source: str, parent: str) -> list[str]:
    """``inf``: the requests the rules look at (signalled, children, parents): parent, time and candidates;
    ``inf_cands``: their candidates, one row each, with their texts."""
    return [
        f"""
        CREATE TEMP TABLE inf_all AS
        SELECT request_id, {parent} AS parent, inference_timestamp_ms AS ts, inference_partition AS part,
               inference_offset AS off
        FROM {source}
        """,
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
        """,
        f"""
        CREATE TEMP TABLE inf_cands AS
        SELECT request_id, c.candidate_id AS id, {CANDIDATE_TEXT} AS text, n
        FROM (SELECT request_id, unnest(candidates) AS c, len(candidates) AS n FROM inf)
        """,
        "DROP TABLE inf_all",
    ]


# --------------------------------------------------------------------------- rules
_RAW_COLUMNS = (
    "rule VARCHAR, basis VARCHAR, request_id VARCHAR, chosen_id VARCHAR, rejected_id VARCHAR, correction VARCHAR, "
    "judged_at_ms BIGINT, source_id VARCHAR, reason VARCHAR, chosen_request_id VARCHAR"
)
_EMPTY_RAW = "SELECT * FROM (SELECT " + ", ".join(
    f"NULL::{c.split()[1]} AS {c.split()[0]}" for c in _RAW_COLUMNS.split(", ")
) + ") WHERE FALSE"

_DELETED = "request_id IN (SELECT request_id FROM deleted)"


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _rule_sql(rule: ImplicitRule) -> str:
    """One rule's rows of ``implicit_raw``: a judgment each (``reason`` NULL), or why a signal gave none."""
    name = _sql_string(rule.name)
    if rule.kind in BEATS_SHOWN:
        value = f"AND coalesce(s.value >= {float(rule.min_value)!r}, FALSE)" if rule.min_value is not None else ""
        return f"""
        SELECT {name}, s.signal_id, s.request_id, s.candidate_id, o.id, NULL, s.ts, s.source_id,
               CASE WHEN NOT EXISTS (SELECT 1 FROM inf i WHERE i.request_id = s.request_id) THEN 'no_inference'
                    WHEN s.{_DELETED} THEN 'deleted'
                    WHEN s.candidate_id IS NULL THEN 'no_candidate'
                    WHEN NOT EXISTS (SELECT 1 FROM inf_cands k WHERE k.request_id = s.request_id
                                     AND k.id = s.candidate_id) THEN 'unknown_candidate'
                    WHEN o.id IS NULL THEN 'no_other_output' END, s.request_id
        FROM sig s
        LEFT JOIN inf_cands o ON o.request_id = s.request_id AND o.id <> s.candidate_id
        WHERE s.kind = {_sql_string(rule.kind)} {value}
        """
    if rule.kind == "edit":
        return f"""
        SELECT {name}, s.signal_id, s.request_id, NULL, s.candidate_id, s.text, s.ts, s.source_id,
               CASE WHEN NOT EXISTS (SELECT 1 FROM inf i WHERE i.request_id = s.request_id) THEN 'no_inference'
                    WHEN s.{_DELETED} THEN 'deleted'
                    WHEN NOT EXISTS (SELECT 1 FROM inf_cands k WHERE k.request_id = s.request_id
                                     AND k.id = s.candidate_id) THEN 'unknown_candidate' END, NULL
        FROM sig s WHERE s.kind = 'edit'
        """
    if rule.kind == "dwell":
        return f"""
        SELECT {name}, a.signal_id || '>' || b.signal_id, a.request_id, a.candidate_id, b.candidate_id, NULL,
               greatest(a.ts, b.ts), a.source_id,
               CASE WHEN NOT EXISTS (SELECT 1 FROM inf i WHERE i.request_id = a.request_id) THEN 'no_inference'
                    WHEN a.{_DELETED} THEN 'deleted'
                    WHEN (SELECT count(*) FROM inf_cands k WHERE k.request_id = a.request_id
                          AND k.id IN (a.candidate_id, b.candidate_id)) < 2 THEN 'unknown_candidate' END,
               a.request_id
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
    SELECT {name}, 'child-' || j.child_id, j.parent_id, j.kept_id, p.id, j.kept_text, j.ts, NULL,
           coalesce(j.reason, CASE WHEN p.id IS NULL THEN 'unknown_candidate' END), j.child_id
    FROM judged j
    LEFT JOIN inf_cands p ON j.reason IS NULL AND p.request_id = j.parent_id
     AND (j.regenerated_id IS NULL OR p.id = j.regenerated_id)
    """
