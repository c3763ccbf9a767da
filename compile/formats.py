"""The JSONL shape of each output format, as a DuckDB projection of the compiled pairs.

Field names follow the trainers' own documentation (see the project's dataset-formats
reference); a trainer silently mis-reads a column that is off by one letter:

=========================  ==================================================================
``trl``                    ``{"prompt": str, "chosen": str, "rejected": str}``
``trl_conversational``     ``{"prompt": [msg], "chosen": [assistant msg], "rejected": [...]}``
``trl_unpaired``           ``{"prompt": str, "completion": str, "label": bool}`` (KTO / BCO)
``openai``                 ``{"input": {"messages": [msg], "tools": [], "parallel_tool_calls": true},
                           "preferred_output": [assistant msg], "non_preferred_output": [...]}``
``axolotl_chatml_intel``   ``{"system": str, "question": str, "chosen": str, "rejected": str}``
``axolotl_chat_template``  ``{"messages": [msg], "chosen": assistant msg, "rejected": ...}``
=========================  ==================================================================

A message is ``{"role": str, "content": str}``; the system prompt, when there is one, is the
first message of conversational prompts. The text formats (``trl``, ``trl_unpaired``) write the
prompt as the ``text_prompt`` option says (``drop``: without the system prompt, chat turns joined
by a blank line without roles; ``fold``: a transcript, see the ``transcript`` macro in
:mod:`prefpair.compile.sql`). Every text a format writes goes through the ``redacted_text``
macro, every message list through ``redacted_messages`` (its contents): identities unless the
compile redacts (:func:`prefpair.compile.redaction.install`).

Optional columns come after the format's own: ``margin`` (float), ids (``pair_id``,
``prompt_id``, ``request_id``, ``chosen_id``, ``rejected_id``, ``feedback_ids``) and provenance
(``derivation``, ``feedback_key``, ``source_type``, the models and versions of both outputs,
``score_chosen``, ``score_rejected``, ``judged_at_ms``). ``openai`` lines keep exactly the three
keys of its documented shape: its optional columns go to ``<split>.meta.jsonl`` beside the split,
one object per line of the split, ``{"line": n, ...}`` with ``n`` counting from 1. A format with
``roles`` leaves out pairs whose prompt holds another message role (counted per format).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefpair.compile.config import CompileConfig, Format
from prefpair.compile.redaction import MESSAGES_MACRO, TEXT_MACRO

# Macros chat() / prompt_text() / candidate_text() are defined in prefpair.compile.sql.
CONVERSATION = (
    "CASE WHEN system_prompt IS NOT NULL AND system_prompt <> '' "
    "THEN list_concat([{'role': 'system', 'content': system_prompt}], chat(prompt_messages, 'user', prompt_text)) "
    "ELSE chat(prompt_messages, 'user', prompt_text) END"
)
CHOSEN_MESSAGES = "chat(chosen_messages, 'assistant', chosen_text)"
REJECTED_MESSAGES = "chat(rejected_messages, 'assistant', rejected_text)"
TEXT_PROMPT = "<text prompt>"  # placeholder: the prompt of text formats, per the text_prompt option


def _text(expr: str) -> str:
    """A text column as written: redacted when the compile redacts."""
    return f"{TEXT_MACRO}({expr})"


def _messages(expr: str) -> str:
    """A message list as written: its contents redacted when the compile redacts."""
    return f"{MESSAGES_MACRO}({expr})"


MESSAGES: dict[str, Any] = {"list": [{"name": "role", "dtype": "string"}, {"name": "content", "dtype": "string"}]}
MESSAGE: dict[str, Any] = {"struct": [{"name": "role", "dtype": "string"}, {"name": "content", "dtype": "string"}]}
STRING: dict[str, Any] = {"dtype": "string"}


@dataclass(frozen=True)
class FormatSpec:
    """One output format: its columns as SQL over the compiled table, and their HF features."""

    name: Format
    trainer: str
    columns: tuple[tuple[str, str, dict[str, Any]], ...]  # (json key, SQL expression, HF feature)
    unpaired: bool = False
    meta_file: bool = False
    """Optional columns go to ``<split>.meta.jsonl`` beside the split: the trainer takes no other keys."""
    roles: tuple[str, ...] | None = None
    """The prompt message roles the trainer takes (None: any); other records are left out, counted."""
    note: str = ""
    """What the card says about this format beyond its trainer."""

    @property
    def table(self) -> str:
        return "final_unpaired" if self.unpaired else "final"

    @property
    def order(self) -> str:
        """The order of a split's lines (the pipeline writes rows in it)."""
        return "h, example_id" if self.unpaired else "h, pair_id"

    @property
    def text_prompt(self) -> bool:
        return any(TEXT_PROMPT in expr for _, expr, _ in self.columns)


SPECS: dict[str, FormatSpec] = {
    spec.name: spec
    for spec in (
        FormatSpec(
            "trl",
            "TRL DPOTrainer / RewardTrainer (standard, explicit prompt)",
            (
                ("prompt", _text(TEXT_PROMPT), STRING),
                ("chosen", _text("chosen_text"), STRING),
                ("rejected", _text("rejected_text"), STRING),
            ),
        ),
        FormatSpec(
            "trl_conversational",
            "TRL DPOTrainer / RewardTrainer (conversational, explicit prompt)",
            (
                ("prompt", _messages(CONVERSATION), MESSAGES),
                ("chosen", _messages(CHOSEN_MESSAGES), MESSAGES),
                ("rejected", _messages(REJECTED_MESSAGES), MESSAGES),
            ),
        ),
        FormatSpec(
            "trl_unpaired",
            "TRL KTOTrainer / BCOTrainer (unpaired)",
            (
                ("prompt", _text(TEXT_PROMPT), STRING),
                ("completion", _text("completion_text"), STRING),
                ("label", "label", {"dtype": "bool"}),
            ),
            unpaired=True,
        ),
        FormatSpec(
            "openai",
            "OpenAI preference fine-tuning (DPO); Together and Fireworks take the same shape",
            (
                (
                    "input",
                    f"{{'messages': {_messages(CONVERSATION)}, 'tools': []::JSON[], 'parallel_tool_calls': TRUE}}",
                    {
                        "struct": [
                            {"name": "messages", **MESSAGES},
                            {"name": "tools", "list": "null"},
                            {"name": "parallel_tool_calls", "dtype": "bool"},
                        ]
                    },
                ),
                ("preferred_output", _messages(CHOSEN_MESSAGES), MESSAGES),
                ("non_preferred_output", _messages(REJECTED_MESSAGES), MESSAGES),
            ),
            meta_file=True,
            note="each line has exactly the three documented keys; with --include-margin, --include-ids or "
            "--include-provenance those columns are in `<split>.meta.jsonl` beside it, one object per line "
            '`{"line": n, ...}` (n counts the lines of `<split>.jsonl` from 1)',
        ),
        FormatSpec(
            "axolotl_chatml_intel",
            "Axolotl `rl: dpo`, `type: chatml.intel`",
            (
                ("system", _text("coalesce(system_prompt, '')"), STRING),
                ("question", _text("prompt_text"), STRING),
                ("chosen", _text("chosen_text"), STRING),
                ("rejected", _text("rejected_text"), STRING),
            ),
            note="the chat turns of a multi-turn prompt are joined into `question` by a blank line, without roles",
        ),
        FormatSpec(
            "axolotl_chat_template",
            "Axolotl `rl: dpo`, `type: chat_template.default`",
            (
                ("messages", _messages(CONVERSATION), MESSAGES),
                ("chosen", f"{{'role': 'assistant', 'content': {_text('chosen_text')}}}", MESSAGE),
                ("rejected", f"{{'role': 'assistant', 'content': {_text('rejected_text')}}}", MESSAGE),
            ),
            roles=("system", "user", "assistant"),
            note="pairs whose prompt holds a message role other than system, user and assistant (such as `tool`: "
            "Axolotl before 0.16 stops on it with a KeyError, and logged messages carry no tool calls, which chat "
            "templates need to render a tool result) are left out of this format and counted in the manifest "
            "(`counts.format_skips`)",
        ),
    )
}

_FLOAT = {"dtype": "float64"}
_INT = {"dtype": "int64"}
_IDS = {"list": "string"}
PAIR_MARGIN = (("margin", "margin", _FLOAT),)
PAIR_IDS = (
    ("pair_id", "pair_id", STRING),
    ("prompt_id", "prompt_id", STRING),
    ("request_id", "request_id", STRING),
    ("chosen_id", "chosen_id", STRING),
    ("rejected_id", "rejected_id", STRING),
    ("feedback_ids", "feedback_ids", _IDS),
)
PAIR_PROVENANCE = (
    ("derivation", "derivation", STRING),
    ("feedback_key", "key", STRING),
    ("source_type", "source_type", STRING),
    ("chosen_model", "chosen_model", STRING),
    ("chosen_model_version", "chosen_model_version", STRING),
    ("rejected_model", "rejected_model", STRING),
    ("rejected_model_version", "rejected_model_version", STRING),
    ("score_chosen", "score_chosen", _FLOAT),
    ("score_rejected", "score_rejected", _FLOAT),
    ("judged_at_ms", "judged_at_ms", _INT),
)
UNPAIRED_IDS = (
    ("example_id", "example_id", STRING),
    ("prompt_id", "prompt_id", STRING),
    ("request_id", "request_id", STRING),
    ("candidate_id", "candidate_id", STRING),
    ("feedback_ids", "feedback_ids", _IDS),
)
UNPAIRED_PROVENANCE = (
    ("derivation", "derivation", STRING),
    ("source_type", "source_type", STRING),
    ("model", "model", STRING),
    ("model_version", "model_version", STRING),
)


def _extras(spec: FormatSpec, config: CompileConfig) -> tuple[tuple[str, str, dict[str, Any]], ...]:
    """The optional columns the config asks for."""
    extra: tuple[tuple[str, str, dict[str, Any]], ...] = ()
    if spec.unpaired:
        if config.include_ids:
            extra += UNPAIRED_IDS
        if config.include_provenance:
            extra += UNPAIRED_PROVENANCE
    else:
        if config.include_margin:
            extra += PAIR_MARGIN
        if config.include_ids:
            extra += PAIR_IDS
        if config.include_provenance:
            extra += PAIR_PROVENANCE
    return extra


def text_prompt_sql(config: CompileConfig) -> str:
    """The prompt of the text formats: ``drop`` keeps the flattened text, ``fold`` writes a transcript."""
    return "prompt_text" if config.text_prompt == "drop" else f"transcript({CONVERSATION})"


def columns(spec: FormatSpec, config: CompileConfig) -> tuple[tuple[str, str, dict[str, Any]], ...]:
    """The columns of the format's lines: its own, plus the optional ones unless they go to a meta file."""
    prompt = text_prompt_sql(config)
    own = tuple((key, expr.replace(TEXT_PROMPT, prompt), feature) for key, expr, feature in spec.columns)
    return own if spec.meta_file else own + _extras(spec, config)


def meta_columns(spec: FormatSpec, config: CompileConfig) -> tuple[tuple[str, str, dict[str, Any]], ...]:
    """The columns of the format's ``<split>.meta.jsonl`` (none: no meta file)."""
    return _extras(spec, config) if spec.meta_file else ()


def line_columns(spec: FormatSpec, config: CompileConfig) -> list[tuple[str, str]]:
    """``(key, expression)`` of each key of a JSONL line of the format, in order."""
    return [(key, expr) for key, expr, _ in columns(spec, config)]


def meta_line_columns(spec: FormatSpec, config: CompileConfig) -> list[tuple[str, str]]:
    """``(key, expression)`` of a meta file's line: ``line`` numbers the split's lines from 1, in their order."""
    line = f"row_number() OVER (PARTITION BY split ORDER BY {spec.order})"
    return [("line", line)] + [(key, expr) for key, expr, _ in meta_columns(spec, config)]


def unsupported_role_sql(spec: FormatSpec) -> str | None:
    """A condition true for rows whose prompt holds a message role the format's trainer does not take."""
    if spec.roles is None:
        return None
    roles = ", ".join(f"'{role}'" for role in spec.roles)
    return f"len(list_filter(coalesce(prompt_messages, []), lambda m: m.role NOT IN ({roles}))) > 0"


def first_unsupported_role_sql(spec: FormatSpec) -> str:
    """``(request_id, index, role)`` of one row :func:`unsupported_role_sql` leaves out (for the warning)."""
    roles = ", ".join(f"'{role}'" for role in spec.roles or ())
    return (
        "request_id, list_position(list_transform(prompt_messages, lambda m: m.role NOT IN "
        f"({roles})), TRUE) - 1, list_filter(prompt_messages, lambda m: m.role NOT IN ({roles}))[1].role"
    )


def features(spec: FormatSpec, config: CompileConfig) -> list[dict[str, Any]]:
    """The ``dataset_info.features`` entries of the dataset card."""
    return [{"name": key, **feature} for key, _, feature in columns(spec, config)]
