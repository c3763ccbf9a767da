"""``prefpair judge``: run an evaluator over logged inferences and write its judgments as feedback.

Pairwise judges see every pair of a request's candidates in both presentation orders (A vs B,
then B vs A) so a judge's position bias cancels: the judgment is what both orders agree on, a TIE
where they disagree, and both verdicts and their agreement go into the feedback's metadata.
Score judges rate one candidate at a time; ranking judges order all of a request's candidates.

The evaluator is a Python function (--evaluator module:function, or an entry point of the
`prefpair.judges` group; `length` ships with prefpair) or an OpenAI-compatible chat-completions
API (--endpoint URL --judge-model NAME, key in PREFPAIR_JUDGE_API_KEY) asked with a prompt
template and answering JSON.

Idempotent and resumable: each judgment's feedback id comes from the run id, request, key and
candidates, and the run's state (<home>/judge/<run id>/state.json) records what Kafka
acknowledged; a rerun, or a run resumed after a crash, writes nothing twice. The last line on
stdout is a JSON summary (judgments written, agreement, questions, retries, tokens, cost).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prefpair.config import Settings
from prefpair.judge.config import JUDGE_FLAGS
from prefpair.judge.run import print_summary, run_judge


def register(subparsers: Any) -> None:
    """Add ``prefpair judge``."""
    parser = subparsers.add_parser(
        "judge",
        help="run a judge (a Python evaluator or an OpenAI-compatible API) over logged inferences; "
        "its judgments become feedback",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="List flags (--model, --tag...) repeat or take comma lists. Exit 0 when every judgment is written, "
        "2 on bad input or a failed evaluator (rerun to resume).",
    )
    JUDGE_FLAGS.add_arguments(
        parser.add_argument_group("judgments"),
        only=("kind", "key", "run_id", "source_type", "score_min", "score_max", "experiment_id", "feedback_group_id",
              "log_dir"),
    )
    JUDGE_FLAGS.add_arguments(
        parser.add_argument_group("evaluator"),
        only=("evaluator", "evaluator_version", "endpoint", "judge_model", "prompt_template", "temperature",
              "json_mode"),
    )  # fmt: skip
    JUDGE_FLAGS.add_arguments(parser.add_argument_group("which inferences"), only=("selection",))
    JUDGE_FLAGS.add_arguments(
        parser.add_argument_group("pace, retries and cost"),
        only=("concurrency", "rate", "max_retries", "backoff_s", "timeout_s", "prompt_price_per_1k",
              "completion_price_per_1k", "checkpoint_every", "progress"),
    )  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    config = JUDGE_FLAGS.load(args)
    bar: Any = None

    def planned(total: int, done: int) -> None:
        nonlocal bar
        if config.progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=done, desc="judging", unit="judgment", file=sys.stderr,
                       dynamic_ncols=True)  # fmt: skip

    def progressed(n: int) -> None:
        if bar is not None:
            bar.update(n)

    try:
        summary = run_judge(settings, config, on_progress=progressed, on_plan=planned)
    finally:
        if bar is not None:
            bar.close()
    print_summary(summary)
    return 0
