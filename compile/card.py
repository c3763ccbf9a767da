"""The dataset card: a README.md with Hugging Face YAML metadata (one config per format, its
data files per split, its features) followed by prose on how the data was compiled."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prefpair.compile.config import CompileConfig
from prefpair.compile.formats import SPECS, features


def size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def to_yaml(value: Any, indent: int = 0) -> list[str]:
    """A small YAML emitter for the card's metadata (mappings, lists, scalars; strings JSON-quoted)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, Mapping | list) and item:
                lines.append(f"{pad}{key}:")
                lines.extend(to_yaml(item, indent + (0 if isinstance(item, list) else 2)))
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, Mapping | list) and item:
                inner = to_yaml(item, indent + 2)
                lines.append(f"{pad}- {inner[0].lstrip()}")
                lines.extend(inner[1:])
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(f"{pad}{_scalar(value)}")
    return lines


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list):
        return "[]"
    text = str(value)
    simple = text.replace("_", "").replace("-", "").replace("/", "").replace(".", "").isalnum()
    return text if simple and not text[0].isdigit() and text not in ("null", "true", "false") else json.dumps(text)


@dataclass(frozen=True)
class CardData:
    """What a compile wrote and counted, as the card shows it.

    ``files`` / ``meta_files``: format -> split -> (path relative to the dataset folder, rows);
    only non-empty files are listed.
    """

    pretty_name: str
    files: Mapping[str, Mapping[str, tuple[str, int]]]
    meta_files: Mapping[str, Mapping[str, tuple[str, int]]]
    stage_counts: Mapping[str, int]
    drop_counts: Mapping[str, int]
    split_counts: Mapping[str, int]
    format_skips: Mapping[str, Mapping[str, int]]
    version: str | None


def default_pretty_name(models: Sequence[str], sources: Sequence[str], version: str | None) -> str:
    """A title from the data: the models of its outputs and who judged them (not the folder's name)."""
    title = "Preference pairs"
    if models:
        title += " on " + ", ".join(models[:3]) + (f" and {len(models) - 3} more" if len(models) > 3 else "")
    if sources:
        title += " (" + ", ".join(source.lower().replace("_", " ") for source in sources) + " feedback)"
    return f"{title}, {version}" if version else title


def render_card(data: CardData, config: CompileConfig) -> str:
    """The README.md of a dataset folder: Hugging Face YAML metadata, then prose."""
    configs: list[dict[str, Any]] = []
    infos: list[dict[str, Any]] = []
    for fmt in config.formats:
        splits = data.files.get(fmt, {})
        if not splits:
            continue
        entry: dict[str, Any] = {"config_name": fmt}
        if not configs:
            entry["default"] = True
        entry["data_files"] = [{"split": split, "path": path} for split, (path, _) in splits.items()]
        configs.append(entry)
        infos.append(
            {
                "config_name": fmt,
                "features": features(SPECS[fmt], config),
                "splits": [{"name": split, "num_examples": rows} for split, (_, rows) in splits.items()],
            }
        )
    card = config.card
    meta: dict[str, Any] = {"pretty_name": data.pretty_name, "license": card.license}
    if card.license == "other":
        meta["license_name"] = card.license_name
        meta["license_link"] = card.license_link
    meta |= {
        "task_categories": ["text-generation"],
        "tags": ["dpo", "preference", "rlhf", "prefpair"],
        "size_categories": [size_category(sum(data.split_counts.values()))],
    }
    if configs:
        meta["configs"] = configs
        meta["dataset_info"] = infos
    header = "\n".join(["---", *to_yaml(meta), "---", ""])
    return header + _prose(data, config)


def loading_snippet(data: CardData, config: CompileConfig) -> str:
    """Python that loads the default config; its paths are relative to the card's folder, which it resolves.

    (``load_dataset(".", config)`` fails in ``datasets``: it names the dataset after the path's last
    part, empty for "." — hence the resolved folder.)
    """
    first = next((fmt for fmt in config.formats if data.files.get(fmt)), None)
    if first is None:
        return ""
    data_files = {split: path for split, (path, _) in data.files[first].items()}
    others = [fmt for fmt in config.formats if data.files.get(fmt) and fmt != first]
    return (
        "```python\nfrom pathlib import Path\n\nfrom datasets import load_dataset\n\n"
        'folder = Path(".").resolve()  # the folder holding this README.md: run from it, or put its path here\n'
        f"files = {json.dumps(data_files)}  # relative to that folder\n"
        'ds = load_dataset("json", data_files={split: str(folder / path) for split, path in files.items()})\n'
        "# Or by config name, with the features declared above:\n"
        f'by_config = load_dataset(str(folder), "{first}")\n'
        + (f"# Other configs: {', '.join(others)}.\n" if others else "")
        + "```\n"
    )


def _table(rows: Sequence[tuple[str, Any]], head: tuple[str, str]) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def _format_line(fmt: str, data: CardData, config: CompileConfig) -> str:
    spec = SPECS[fmt]
    files = ", ".join(f"`{path}` ({rows})" for path, rows in data.files.get(fmt, {}).values()) or "none (no rows)"
    notes = [spec.note] if spec.note else []
    if spec.text_prompt:
        notes.append(TEXT_PROMPT_NOTES[config.text_prompt])
    if spec.meta_file and data.meta_files.get(fmt):
        notes.append("meta files: " + ", ".join(f"`{path}`" for path, _ in data.meta_files[fmt].values()))
    skipped = data.format_skips.get(fmt, {})
    if skipped:
        notes.append("left out here: " + ", ".join(f"{n} ({reason})" for reason, n in skipped.items()))
    return f"- `{fmt}`: {spec.trainer}; files: {files}" + "".join(f"\n  - {note}" for note in notes)


TEXT_PROMPT_NOTES = {
    "drop": "the prompt is text: the system prompt is left out, and the turns of a chat prompt are joined by a "
    "blank line without their roles (`text_prompt: drop`; `fold` keeps both)",
    "fold": "the prompt is a transcript (`text_prompt: fold`): the system prompt and each turn as `Role: content` "
    "blocks (`System: ...`, `User: ...`, `Assistant: ...`) separated by a blank line, ending with an `Assistant:` "
    "block that the completion follows",
}


def _prose(data: CardData, config: CompileConfig) -> str:
    formats = "\n".join(_format_line(fmt, data, config) for fmt in config.formats)
    snippet = loading_snippet(data, config)
    load = f"\n## Loading\n\n{snippet}" if snippet else ""
    incremental = (
        f"\nThis is incremental version `{data.version}`: it holds only pairs that no earlier version "
        "of this output holds; use all versions together.\n"
        if data.version
        else ""
    )
    margin = (
        f"\n`margin` (scale {config.margin_scale}): "
        + str(CompileConfig.model_fields["include_margin"].description).partition(": ")[2]
        + ". Margins are rounded to 6 decimals.\n"
        if config.include_margin
        else ""
    )
    card = config.card
    license_line = f"[{card.license_name}]({card.license_link})" if card.license == "other" else f"`{card.license}`"
    return f"""
# {data.pretty_name}

Preference pairs compiled by `prefpair compile` from production inference and feedback events
(the Parquet log that `prefpair consume` writes). Each pair is a prompt, a chosen and a rejected
output; the unpaired format holds single outputs labelled desirable or not. License: {license_line}.
{incremental}
## How it was made

1. Feedback was resolved per feedback id: the latest CREATE with later UPDATEs overlaid; deleted feedback is gone.
2. Pairs were derived from pairwise judgments, rankings ({config.rankings}), scores on candidates of one request
   (minimum score difference {config.min_margin}) and corrections (the correction beats the output it corrects).
   Ties and both-bad judgments give no pair.
3. Empty and identical pairs were dropped; contradictions on one prompt and pair of outputs were resolved by
   the `{config.contradictions}` policy; exact duplicates were removed.
4. Sampling (seed {config.seed}): {config.sampling.model_dump(mode="json")}.
5. Splits by prompt hash ({", ".join(f"{k} {v}" for k, v in config.splits.items())}): no prompt is in two splits.

Filters: {config.filters.model_dump(mode="json", exclude_defaults=True) or "none"}.
{margin}
## Formats

{formats}
{load}
## Counts

{_table(list(data.split_counts.items()), ("split", "pairs"))}

{_table(list(data.stage_counts.items()), ("stage", "rows"))}

{_table(list(data.drop_counts.items()) or [("(none)", 0)], ("dropped because", "rows"))}

`manifest.json` lists the inputs (log segments and offset watermarks), the full configuration, the rows each
format left out (`counts.format_skips`), and the SHA-256 of every file (meta files name their split: `meta_of`).
"""
