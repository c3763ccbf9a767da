"""``prefpair compile``: the Parquet log in, chosen/rejected JSONL datasets out.

    from prefpair.compile import CompileConfig, compile_dataset

    result = compile_dataset(settings.log_dir, settings.datasets_dir / "prefs", CompileConfig(seed=7))
    result.split_counts, result.drop_counts, result.files

Stages (:mod:`~prefpair.compile.pipeline` runs them in order: :mod:`~prefpair.compile.resolution`,
:mod:`~prefpair.compile.filters`, :mod:`~prefpair.compile.derivation`,
:mod:`~prefpair.compile.sampling`, :mod:`~prefpair.compile.unpaired`), formats
(:mod:`~prefpair.compile.formats`), the output layout and incremental versions
(:mod:`~prefpair.compile.output`). ``CompileConfig(engine="spark")`` runs the same stages on
Apache Spark (:mod:`~prefpair.compile.spark`, :mod:`~prefpair.compile.dialect`).
"""

from prefpair.compile.config import FORMATS, CardConfig, CompileConfig, CompileFilters, SamplingConfig
from prefpair.compile.exceptions import (
    CompileConfigError,
    CompileError,
    NoCommittedLogError,
    OutputDirError,
    OutputLockedError,
    SparkTranslationError,
    SparkUnavailableError,
)
from prefpair.compile.job import CompileResult, compile_dataset

__all__ = [
    "FORMATS",
    "CardConfig",
    "CompileConfig",
    "CompileConfigError",
    "CompileError",
    "CompileFilters",
    "CompileResult",
    "NoCommittedLogError",
    "OutputDirError",
    "OutputLockedError",
    "SamplingConfig",
    "SparkTranslationError",
    "SparkUnavailableError",
    "compile_dataset",
]
