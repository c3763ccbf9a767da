"""The dataset card: a README.md with Hugging Face YAML metadata (one config per format, its
data files per split, its features) followed by prose on how the data was compiled."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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


def render_card(
    name: str,
    config: CompileConfig,
    files: Mapping[str, Mapping[str, tuple[str, int]]],
    stage_counts: Mapping[str, int],
    drop_counts: Mapping[str, int],
    split_counts: Mapping[str, int],
    version: str | None,
) -> str:
    """``files``: format -> split -> (relative path, rows); only non-empty files are listed."""
    configs: list[dict[str, Any]] = []
    infos: list[dict[str, Any]] = []
    default_set = False
    for fmt in config.formats:
        splits = files.get(fmt, {})
        if not splits:
            continue
        entry: dict[str, Any] = {"config_name": fmt}
        if not default_set:
            entry["default"] = True
            default_set = True
        entry["data_files"] = [{"split": split, "path": path} for split, (path, _) in splits.items()]
        configs.append(entry)
        infos.append(
            {
                "config_name": fmt,
                "features": features(SPECS[fmt], config),
                "splits": [{"name": split, "num_examples": rows} for split, (_, rows) in splits.items()],
            }
        )
    total = sum(split_counts.values())
    meta: dict[str, Any] = {
        "pretty_name": name,
        "license": "other",
        "task_categories": ["text-generation"],
        "tags": ["dpo", "preference", "rlhf", "prefpair"],
        "size_categories": [size_category(total)],
    }
    if configs:
        meta["configs"] = configs
        meta["dataset_info"] = infos
    header = "\n".join(["---", *to_yaml(meta), "---", ""])
    return header + _prose(name, config, files, stage_counts, drop_counts, split_counts, version)


def _table(rows: Sequence[tuple[str, Any]], head: tuple[str, str]) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def _prose(
    name: str,
    config: CompileConfig,
    files: Mapping[str, Mapping[str, tuple[str, int]]],
    stage_counts: Mapping[str, int],
    drop_counts: Mapping[str, int],
    split_counts: Mapping[str, int],
    version: str | None,
) -> str:
    formats = "\n".join(
        f"- `{fmt}`: {SPECS[fmt].trainer}; files: "
        + (", ".join(f"`{path}` ({rows})" for path, rows in files.get(fmt, {}).values()) or "none (no rows)")
        for fmt in config.formats
    )
    first = next((fmt for fmt in config.formats if files.get(fmt)), None)
    load = ""
    if first:
        data_files = {split: path for split, (path, _) in files[first].items()}
        load = (
            "\n## Loading\n\n```python\nfrom datasets import load_dataset\n\n"
            f'ds = load_dataset("json", data_files={json.dumps(data_files)})\n'
            f'# or, from this folder: load_dataset("path/to/{name}", "{first}")\n```\n'
        )
    incremental = (
        f"\nThis is incremental version `{version}`: it holds only pairs that no earlier version "
        "of this output holds; use all versions together.\n"
        if version
        else ""
    )
    return f"""
# {name}

Preference pairs compiled by `prefpair compile` from production inference and feedback events
(the Parquet log that `prefpair consume` writes). Each pair is a prompt, a chosen and a rejected
output; the unpaired format holds single outputs labelled desirable or not.
{incremental}
## How it was made

1. Feedback was resolved per feedback id: the latest CREATE with later UPDATEs overlaid; deleted feedback is gone.
2. Pairs were derived from pairwise judgments, rankings ({config.rankings}), scores on candidates of one request
   (minimum margin {config.min_margin}) and corrections (the correction beats the output it corrects).
   Ties and both-bad judgments give no pair.
3. Empty and identical pairs were dropped; contradictions on one prompt and pair of outputs were resolved by
   the `{config.contradictions}` policy; exact duplicates were removed.
4. Sampling (seed {config.seed}): {config.sampling.model_dump(mode="json")}.
5. Splits by prompt hash ({", ".join(f"{k} {v}" for k, v in config.splits.items())}): no prompt is in two splits.

Filters: {config.filters.model_dump(mode="json", exclude_defaults=True) or "none"}.

## Formats

{formats}
{load}
## Counts

{_table(list(split_counts.items()), ("split", "pairs"))}

{_table(list(stage_counts.items()), ("stage", "rows"))}

{_table(list(drop_counts.items()) or [("(none)", 0)], ("dropped because", "rows"))}

`manifest.json` lists the inputs (log segments and offset watermarks), the full configuration, and the
SHA-256 of every file.
"""
