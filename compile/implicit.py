"""Implicit pairs in the compile: the preferences of the implicit rules (:mod:`prefpair.schemas.implicit`),
as judgments the usual stages turn into pairs. Three hooks in the pipeline:

* :func:`add_judgments`, after resolution: one judgment per implicit preference, added to
  ``resolved`` with the source type ``IMPLICIT:<rule>`` and the key ``implicit:<rule>``; from there
  context, filters, derivation, validation, cleaning, sampling and split treat them like explicit
  ones. Same-request preferences are pairwise judgments; cross-request ones (a regeneration: the
  child's kept output beats its parent's) and edits are corrections on the rejected output (the
  chosen text comes with the judgment).
* :func:`weigh`, after derivation: an implicit pair's margin is its rule's confidence times
  ``margin_scale``.
* :func:`finish`, after selection: per rule, judgments, drops and pairs, for the manifest.

``--implicit include`` (default) mixes them with explicit judgments, ``exclude`` leaves them out,
``only`` keeps nothing else. The Spark engine does not derive implicit pairs: on a log with signals or
regenerations its manifest says it skipped them (on one without, it writes what DuckDB would).
"""

from __future__ import annotations

from typing import Any

import duckdb

from prefpair.compile.exceptions import CompileConfigError
from prefpair.compile.sql import sql_list, sql_string
from prefpair.compile.workspace import Workspace
from prefpair.schemas.implicit import (
    DEFAULT_RULES_FILE,
    SOURCE_PREFIX,
    ImplicitRules,
    ImplicitRulesError,
    load_rules,
    preference_sql,
)

KEY_PREFIX = "implicit:"


def rules_of(path: str | None) -> ImplicitRules:
    """The rules a compile uses; a bad file is a CompileConfigError naming ``implicit_rules``."""
    try:
        return load_rules(path)
    except ImplicitRulesError as exc:
        raise CompileConfigError(f"implicit_rules ({exc.where}): {exc.field}", exc.reason) from None


# --------------------------------------------------------------------------- stages
def add_judgments(ws: Workspace) -> None:
    """After resolution: implicit judgments into ``resolved`` (see the module docstring)."""
    mode = ws.config.implicit
    rules_file = ws.config.implicit_rules or f"(shipped) {DEFAULT_RULES_FILE}"
    section: dict[str, Any] = {"mode": mode, "rules_file": rules_file}
    ws.sections["implicit"] = section
    if mode == "exclude":
        return
    rules = rules_of(ws.config.implicit_rules)
    section["rules"] = {rule.name: {"kind": rule.kind, "confidence": rule.confidence} for rule in rules.rules}
    if ws.config.engine != "duckdb":
        if _has_implicit_inputs(ws):
            section["skipped"] = "implicit pairs are derived on the duckdb engine only"
        else:  # nothing to derive: the section the duckdb engine writes for such a log
            section["signals"] = {}
            section["per_rule"] = {rule.name: {"judgments": 0, "not_derived": {}, "pairs": 0} for rule in rules.rules}
        return
    source = ws.log_table("inference")
    columns = {str(row[0]) for row in ws.rows(f"DESCRIBE SELECT * FROM {source}")}
    for statement in preference_sql(rules, ws.log_table("signals"), source,
                                    has_parent="parent_request_id" in columns):  # fmt: skip
        ws.execute(statement)
    section["signals"] = {str(kind): int(n) for kind, n in ws.rows(
        "SELECT kind, count(*) FROM sig GROUP BY kind ORDER BY kind")}  # fmt: skip
    ws.execute(
        f"""
        INSERT INTO resolved BY NAME
        SELECT {sql_string(KEY_PREFIX)} || rule || ':' || basis || coalesce(':' || rejected_id, '') AS feedback_id,
               request_id, judged_at_ms, {sql_string(KEY_PREFIX)} || rule AS key,
               CASE WHEN correction IS NULL THEN 'PAIRWISE' END AS kind,
               CASE WHEN correction IS NULL THEN 'PREFERRED' END AS outcome,
               CASE WHEN correction IS NULL THEN chosen_id END AS chosen_id,
               CASE WHEN correction IS NULL THEN rejected_id END AS rejected_id,
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


def _has_implicit_inputs(ws: Workspace) -> bool:
    """Whether the log holds signals or regenerations (read with DuckDB from the log's files)."""
    if ws.files.get("signals"):
        return True
    inference = [str(path) for path in ws.files.get("inference", [])]
    if not inference:
        return False
    con = duckdb.connect()
    try:
        source = f"read_parquet({sql_list(inference)}, union_by_name=true)"
        columns = {str(row[0]) for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        if "parent_request_id" not in columns:
            return False
        found = con.execute(f"SELECT count(*) FROM {source} WHERE parent_request_id IS NOT NULL").fetchone()
        return bool(found and found[0])
    finally:
        con.close()


def weigh(ws: Workspace) -> None:
    """After derivation: an implicit pair's margin is its rule's confidence times ``margin_scale``."""
    rules = ws.sections.get("implicit", {}).get("rules")
    if not rules or ws.config.engine != "duckdb":
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
    if not per_rule or ws.config.engine != "duckdb":
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


