"""The SQL text the compile stages share: literals, the drop-reason CASE and DuckDB macros.

The macros (``has_text``, ``candidate_text``, ``prompt_text``, ``chat``, ``transcript``,
``prompt_bucket``) are created on the compile's connection by
:class:`~prefpair.compile.workspace.Workspace`; the stages and the formats' queries
(:mod:`prefpair.compile.formats`) call them. The stages' SQL is DuckDB's; the Spark engine
translates it (:mod:`prefpair.compile.dialect`).
"""

from __future__ import annotations

from collections.abc import Sequence

MACRO_BODIES: dict[str, tuple[tuple[str, ...], str]] = {
    # Whether a string holds anything but whitespace (a regex search stops at the first such char: no copy).
    "has_text": (("s",), r"coalesce(regexp_matches(s, '\S'), FALSE)"),
    # The text of a candidate: its text, else its messages' contents.
    "candidate_text": (
        ("c",),
        "coalesce(c.text, array_to_string(list_transform(c.messages, lambda m: m.content), chr(10) || chr(10)), '')",
    ),
    # The prompt as text: the prompt, else the messages' contents.
    "prompt_text": (
        ("prompt", "messages"),
        "CASE WHEN has_text(prompt) THEN prompt "
        "ELSE coalesce(array_to_string(list_transform(messages, lambda m: m.content), chr(10) || chr(10)), '') END",
    ),
    # Chat messages {role, content}: the given ones, else one message of `role` holding `text`.
    "chat": (
        ("messages", "role", "text"),
        "CASE WHEN len(coalesce(messages, [])) > 0 "
        "THEN list_transform(messages, lambda m: {'role': m.role, 'content': m.content}) "
        "ELSE [{'role': role, 'content': text}] END",
    ),
    # A conversation as text: one 'Role: content' block per message, blank-line separated, then 'Assistant:'.
    "transcript": (
        ("conversation",),
        "array_to_string(list_concat(list_transform(conversation, lambda m: upper(left(m.role, 1)) || "
        "substr(m.role, 2) || ': ' || m.content), ['Assistant:']), chr(10) || chr(10))",
    ),
    # A prompt's place in [0, 1): the first 32 bits of its hash (the split goes by it).
    "prompt_bucket": (("prompt_id",), "('0x' || substr(prompt_id, 1, 8))::BIGINT / 4294967296.0"),
}
"""Macro name -> (parameters, DuckDB SQL body). One definition: DuckDB creates them as macros
(:data:`MACROS`), the Spark engine expands the same bodies inline (:mod:`prefpair.compile.dialect`)."""

MACROS = tuple(
    f"CREATE OR REPLACE TEMP MACRO {name}({', '.join(params)}) AS {body}"
    for name, (params, body) in MACRO_BODIES.items()
)


def sql_string(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def sql_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(sql_string(v) for v in values) + "]"


def sql_in(values: Sequence[str]) -> str:
    """The inside of ``IN (...)``: string literals, comma separated."""
    return ", ".join(sql_string(v) for v in values)


def reason_case(checks: Sequence[tuple[str, str]]) -> str:
    """``CASE WHEN cond THEN 'reason' ... END``: the first failing check names the drop."""
    if not checks:
        return "NULL::VARCHAR"
    return "CASE " + " ".join(f"WHEN {cond} THEN {sql_string(reason)}" for cond, reason in checks) + " END"
