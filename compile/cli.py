"""``prefpair compile``: the committed Parquet log in, chosen/rejected JSONL datasets out.

Safe on a schedule: reads only committed segments, writes aside and renames, refuses to run
twice on one output (lock), and with ``--incremental`` emits only pairs that are new since the
last run, into a new version directory. Same log and seed: byte-identical files.

The log and the output may be ``s3://bucket/prefix``: an S3 output is uploaded, then published by
a pointer object written last (``<out>/published/<n>.json``, naming ``<out>/data/<n>-<attempt>/``);
of two runs publishing at once, the second fails and leaves nothing behind.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prefpair.compile.config import COMPILE_FLAGS
from prefpair.compile.formats import SPECS
from prefpair.compile.job import CompileResult, compile_dataset
from prefpair.config import Settings
from prefpair.flags import Flags
from prefpair.storage import Location, location

DEFAULT_NAME = "preferences"


class CompileJob(BaseModel):
    """Where a compile reads and writes (what it does is :class:`CompileConfig`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    log_dir: Location | None = Field(
        default=None, description="the Parquet log, a folder or s3://bucket/prefix; unset means <home>/log"
    )
    out: Location | None = Field(
        default=None,
        description="the dataset directory, or s3://bucket/prefix (published by pointer); "
        "unset means <home>/datasets/<name>",
    )
    name: str = Field(default=DEFAULT_NAME, description="dataset name when --out is not given")

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        if not value or "/" in value or value in (".", ".."):
            raise ValueError(f"not a folder name: {value!r}")
        return value


JOB_FLAGS = Flags(CompileJob, env_prefix="PREFPAIR_COMPILE_")


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
    JOB_FLAGS.add_arguments(io)
    COMPILE_FLAGS.add_arguments(
        io, only=("formats", "incremental", "include_margin", "include_ids", "include_provenance", "margin_scale",
                  "text_prompt"),
    )  # fmt: skip
    COMPILE_FLAGS.add_arguments(parser.add_argument_group("dataset card"), only=("card",))
    COMPILE_FLAGS.add_arguments(parser.add_argument_group("redaction"), only=("redact", "redact_patterns"))
    COMPILE_FLAGS.add_arguments(
        parser.add_argument_group("pairs"),
        only=("rankings", "min_margin", "contradictions", "implicit", "implicit_rules"),
    )
    COMPILE_FLAGS.add_arguments(parser.add_argument_group("filters"), only=("filters",))
    COMPILE_FLAGS.add_arguments(parser.add_argument_group("sampling and split"), only=("sampling", "splits", "seed"))
    COMPILE_FLAGS.add_arguments(
        parser.add_argument_group("engine"), only=("engine", "spark_master", "memory_limit", "threads")
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    job = JOB_FLAGS.load(args)
    config = COMPILE_FLAGS.load(args)
    options = settings.s3_options()
    log_dir = location(job.log_dir or settings.log_dir, options)
    out_dir = location(job.out or settings.datasets_dir / job.name, options)
    result = compile_dataset(log_dir, out_dir, config)
    print(summary(result))
    return 0


def summary(result: CompileResult[Any]) -> str:
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
