"""``prefpair compile``: the committed Parquet log in, chosen/rejected JSONL datasets out.

Safe on a schedule: reads only committed segments, writes aside and renames, refuses to run
twice on one output (lock), and with ``--incremental`` emits only pairs that are new since the
last run, into a new version directory. Same log and seed: byte-identical files.
"""

from __future__ import annotations

import argparse
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

from prefpair.compile.config import FORMATS, CardConfig, CompileConfig, CompileFilters, SamplingConfig
from prefpair.compile.exceptions import CompileConfigError
from prefpair.compile.formats import SPECS
from prefpair.compile.job import CompileResult, compile_dataset
from prefpair.config import Settings

DEFAULT_NAME = "preferences"


def _help(model: type[Any], field: str) -> str:
    info = model.model_fields[field]
    default = info.get_default(call_default_factory=True)
    shown = ", ".join(default) if isinstance(default, tuple) and default else default
    return f"{info.description} [default: {shown}]"


def _time_ms(value: str) -> int:
    """Epoch milliseconds, or an ISO-8601 time (``2026-11-01``, ``2026-11-01T12:00:00+00:00``; UTC if naive)."""
    if value.isdigit():
        return int(value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epoch milliseconds or an ISO-8601 time, got {value!r}") from None
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _split(value: str) -> tuple[str, float]:
    name, sep, fraction = value.partition("=")
    try:
        if not sep:
            raise ValueError
        return name.strip(), float(fraction)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=FRACTION such as train=0.9, got {value!r}") from None


def _listed(values: list[str] | None) -> tuple[str, ...]:
    """Repeatable flags that also take comma lists: ``--model a --model b`` or ``--model a,b``."""
    return tuple(v.strip() for item in values or [] for v in item.split(",") if v.strip())


def _formats_epilog() -> str:
    """What each format holds beyond its trainer's documented shape (the same notes as the dataset card)."""
    lines = ["formats:"]
    for name, spec in SPECS.items():
        notes = [spec.trainer, *([spec.note] if spec.note else [])]
        if spec.text_prompt:
            notes.append("the prompt is text, written as --text-prompt says")
        lines += textwrap.wrap(
            f"{name}: {'; '.join(notes)}",
            width=100,
            initial_indent="  ",
            subsequent_indent="    ",
            break_on_hyphens=False,
        )
    return "\n".join(lines)


def register(subparsers: Any) -> None:
    """Add ``prefpair compile``."""
    parser = subparsers.add_parser(
        "compile",
        help="compile the log into preference datasets (TRL, OpenAI, Axolotl JSONL + manifest + card)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_formats_epilog()
        + "\n\nList flags (--format, --model, --tag...) repeat or take comma lists. Exit 0 on success, "
        "2 on bad input (no committed log, output locked, bad option).",
    )
    io = parser.add_argument_group("input and output")
    io.add_argument("--log-dir", type=Path, help="the Parquet log [<home>/log]")
    io.add_argument("--out", type=Path, help="the dataset directory [<home>/datasets/<name>]")
    io.add_argument("--name", default=DEFAULT_NAME, help=f"dataset name when --out is not given [{DEFAULT_NAME}]")
    io.add_argument(
        "--format", action="append", metavar="FORMAT",
        help=f"{_help(CompileConfig, 'formats')}; one of {', '.join(FORMATS)}",
    )  # fmt: skip
    io.add_argument("--incremental", action="store_true", help=_help(CompileConfig, "incremental"))
    io.add_argument("--include-margin", action="store_true", help=_help(CompileConfig, "include_margin"))
    io.add_argument("--include-ids", action="store_true", help=_help(CompileConfig, "include_ids"))
    io.add_argument("--include-provenance", action="store_true", help=_help(CompileConfig, "include_provenance"))
    io.add_argument("--margin-scale", type=float, help=_help(CompileConfig, "margin_scale"))
    io.add_argument("--text-prompt", choices=["drop", "fold"], help=_help(CompileConfig, "text_prompt"))

    card = parser.add_argument_group("dataset card")
    card.add_argument("--pretty-name", help=_help(CardConfig, "pretty_name"))
    card.add_argument("--license", help=_help(CardConfig, "license"))
    card.add_argument("--license-name", help=_help(CardConfig, "license_name"))
    card.add_argument("--license-link", help=_help(CardConfig, "license_link"))

    pairs = parser.add_argument_group("pairs")
    pairs.add_argument("--rankings", choices=["all_pairs", "best_worst"], help=_help(CompileConfig, "rankings"))
    pairs.add_argument("--min-margin", type=float, help=_help(CompileConfig, "min_margin"))
    pairs.add_argument(
        "--contradictions", choices=["majority", "latest", "drop"], help=_help(CompileConfig, "contradictions")
    )

    filters = parser.add_argument_group("filters")
    filters.add_argument("--since", type=_time_ms, metavar="TIME", help=_help(CompileFilters, "since_ms"))
    filters.add_argument("--until", type=_time_ms, metavar="TIME", help=_help(CompileFilters, "until_ms"))
    for flag, field in (
        ("--model", "models"),
        ("--model-version", "model_versions"),
        ("--source-type", "source_types"),
        ("--key", "keys"),
        ("--environment", "environments"),
        ("--user", "users"),
        ("--tag", "tags"),
    ):
        filters.add_argument(
            flag, action="append", dest=f"filter_{field}", metavar=flag[2:].upper().replace("-", "_"),
            help=_help(CompileFilters, field),
        )  # fmt: skip

    sampling = parser.add_argument_group("sampling and split")
    sampling.add_argument("--max-pairs-per-prompt", type=int, help=_help(SamplingConfig, "max_pairs_per_prompt"))
    sampling.add_argument("--max-pairs", type=int, help=_help(SamplingConfig, "max_pairs"))
    sampling.add_argument("--stratify-by", choices=["source", "model"], help=_help(SamplingConfig, "stratify_by"))
    sampling.add_argument("--balance-position", action="store_true", help=_help(SamplingConfig, "balance_position"))
    sampling.add_argument(
        "--split", action="append", type=_split, metavar="NAME=FRACTION", help=_help(CompileConfig, "splits")
    )
    sampling.add_argument("--seed", type=int, help=_help(CompileConfig, "seed"))

    engine = parser.add_argument_group("engine")
    engine.add_argument("--memory-limit", help=_help(CompileConfig, "memory_limit"))
    engine.add_argument("--threads", type=int, help=_help(CompileConfig, "threads"))
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> CompileConfig:
    """The CompileConfig the flags describe (flags not given keep the config's defaults)."""
    values: dict[str, Any] = {}
    if args.format:
        values["formats"] = _listed(args.format)
    for field in (
        "rankings", "min_margin", "contradictions", "seed", "memory_limit", "threads", "margin_scale", "text_prompt",
    ):  # fmt: skip
        if getattr(args, field) is not None:
            values[field] = getattr(args, field)
    for field in ("incremental", "include_margin", "include_ids", "include_provenance"):
        if getattr(args, field):
            values[field] = True
    if args.split:
        values["splits"] = dict(args.split)
    filters: dict[str, Any] = {}
    if args.since is not None:
        filters["since_ms"] = args.since
    if args.until is not None:
        filters["until_ms"] = args.until
    for field in CompileFilters.model_fields:
        listed = _listed(getattr(args, f"filter_{field}", None))
        if listed:
            filters[field] = listed
    if filters:
        values["filters"] = filters
    sampling = {
        field: getattr(args, field)
        for field in ("max_pairs_per_prompt", "max_pairs", "stratify_by")
        if getattr(args, field) is not None
    }
    if args.balance_position:
        sampling["balance_position"] = True
    if sampling:
        values["sampling"] = sampling
    card = {
        field: getattr(args, field)
        for field in ("pretty_name", "license", "license_name", "license_link")
        if getattr(args, field) is not None
    }
    if card:
        values["card"] = card
    return CompileConfig.parse(values)


def run(args: argparse.Namespace, settings: Settings) -> int:
    config = config_from_args(args)
    log_dir = args.log_dir or settings.log_dir
    out_dir = args.out or settings.datasets_dir / args.name
    if not args.name or "/" in args.name:
        raise CompileConfigError("name", f"not a folder name: {args.name!r}")
    result = compile_dataset(log_dir, out_dir, config)
    print(summary(result))
    return 0


def summary(result: CompileResult) -> str:
    """The lines printed at the end of a compile."""
    drops = ", ".join(f"{reason} {n}" for reason, n in result.drop_counts.items()) or "none"
    splits = ", ".join(f"{split} {n}" for split, n in result.split_counts.items())
    lines = [
        f"compiled {result.pairs_total} pairs ({splits}) and {result.unpaired_total} unpaired examples "
        f"in {result.seconds:.1f} s",
        f"  dropped    {drops}",
        f"  dataset    {result.out_dir}" + (f" (version {result.version})" if result.version else ""),
        f"  manifest   {result.manifest}",
    ]
    lines += [f"  file       {path}" for path in result.files]
    return "\n".join(lines)
