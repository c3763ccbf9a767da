"""``prefpair demo``: the whole pipeline on synthetic traffic, in one command.

Starts the local Kafka broker unless a cluster is configured (or one already runs), creates a
fresh set of topics for this run, simulates serving traffic through the producer SDK (several
model versions, feedback from end users, annotators, a model judge and a reward model, updates,
deletes, feedback before its inference, lost inferences, malformed messages), runs the consumer
until the group has caught up, defines a comparative experiment of two simulated models
(chat-large against chat-small), runs a judge over a sample of the logged requests as part of that
experiment (the built-in ``length`` judge, asked in both presentation orders) and consumes its
feedback, compiles a dataset, writes the analytics report (with the experiment's head-to-head
section and winner statement) and prints a summary. It stops what it started. Each run
gets its own topics and folder under ``<home>/demo/<run id>``, so running it again never mixes runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prefpair.cli.logs import LOG_FLAGS
from prefpair.compile import CompileConfig, CompileResult, compile_dataset
from prefpair.config import Settings
from prefpair.consumers import ConsumerConfig, ConsumerDaemon, RunStats
from prefpair.flags import Flags
from prefpair.judge import JudgeConfig, JudgeSelection, JudgeSummary, run_judge
from prefpair.kafka import client_config, create_producer
from prefpair.producers import PreferenceLogger
from prefpair.producers.experiments import create_experiment
from prefpair.schemas.experiments import Experiment
from prefpair.simulate import SimulationStats, Traffic, TrafficSpec, send_to_kafka
from prefpair.simulate.signals import SignalPlan, send_planted
from prefpair.topics import create_topics

log = logging.getLogger(__name__)

DEMO_GRACE_MS = 3_000
"""Feedback waits this long for its inference in the demo (the daemon's default is 5 minutes)."""
DEMO_JUDGE_SAMPLE = 200
"""Requests the demo's judge run looks at (a seeded sample)."""
DEMO_JUDGE_KEY = "length_judge"
DEMO_EXPERIMENT_ARMS = ("chat-large", "chat-small")
"""The simulated models the demo's experiment compares (every version of each)."""


class DemoOptions(BaseModel):
    """What ``prefpair demo`` simulates and keeps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests: int = Field(default=3000, ge=1, description="Simulated requests.")
    seed: int = Field(default=7, description="Seed of the simulation and the compile.")
    partitions: int = Field(default=4, ge=1, description="Partitions of each topic of the run.")
    report: bool = Field(default=True, description="Write the analytics report.")
    judge: bool = Field(
        default=True,
        description=f"Run the built-in `length` judge (no network) over a sample of {DEMO_JUDGE_SAMPLE} logged "
        f"requests, as part of an experiment comparing {' and '.join(DEMO_EXPERIMENT_ARMS)}, and consume its "
        "feedback before compiling.",
    )
    keep_broker: bool = Field(default=False, description="Leave the local broker running if the demo started it.")


DEMO_FLAGS = Flags(DemoOptions, env_prefix="PREFPAIR_DEMO_")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on synthetic traffic (local broker, consumer, compile, report, summary)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    DEMO_FLAGS.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    options = DEMO_FLAGS.load(args)
    if "log_level" not in LOG_FLAGS.load(args).model_fields_set:
        # The steps and progress bars say enough; --log-level INFO for more.
        logging.getLogger("prefpair").setLevel(logging.WARNING)
    run_id = time.strftime("%Y%m%d-%H%M%S")
    folder = (settings.home / "demo" / run_id).resolve()
    with _cluster(settings, options.keep_broker) as live:
        demo = live.model_copy(
            update={
                "inference_topic": f"prefpair.demo.{run_id}.inference",
                "feedback_topic": f"prefpair.demo.{run_id}.feedback",
                "dead_letter_topic": f"prefpair.demo.{run_id}.dead-letters",
                "experiments_topic": f"prefpair.demo.{run_id}.experiments",
                "tokens_topic": f"prefpair.demo.{run_id}.tokens",
                "partitions": options.partitions,
                "home": folder,
            }
        )
        return _pipeline(demo, options, folder)


@contextlib.contextmanager
def _cluster(settings: Settings, keep: bool) -> Iterator[Settings]:
    """Settings pointing at a running cluster; starts (and later stops) the local broker if needed."""
    if settings.bootstrap_servers:
        yield settings
        return
    from prefpair.broker import LocalBroker, running_address

    address = running_address(settings.broker_dir)
    if address:
        _step(f"using the local broker already running at {address}")
        yield settings.model_copy(update={"bootstrap_servers": address})
        return
    broker = LocalBroker(settings.broker_dir)
    _step(f"starting the local Kafka broker (data in {settings.broker_dir})")
    bootstrap = broker.start()
    _step(f"broker up at {bootstrap}")
    try:
        yield settings.model_copy(update={"bootstrap_servers": bootstrap})
    finally:
        if keep:
            _step(f"leaving the broker running at {bootstrap} (`prefpair broker stop` stops it)")
        else:
            broker.stop()
            _step("broker stopped")


def _step(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def _bar(total: int, desc: str, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=True, dynamic_ncols=True)


def _pipeline(settings: Settings, options: DemoOptions, folder: Path) -> int:
    started = time.monotonic()
    report = create_topics(settings)
    _step(f"topics {settings.inference_topic} and {settings.feedback_topic}, {report.co_partitions} partitions each")

    traffic, planted = _simulate(settings, options)
    _step(
        f"sent {traffic.inferences} inferences and {traffic.feedback_events} feedback events "
        f"({traffic.updates} updates, {traffic.deletes} deletes, {traffic.early_feedback} before their inference, "
        f"{traffic.lost_inferences} whose inference was never logged) and {traffic.malformed} malformed messages"
    )
    _step(
        f"sent {planted.get('signal', 0)} implicit signals with a planted accuracy per rule, on "
        f"{planted.get('inference', 0)} more requests (with {planted.get('pairwise', 0) + planted.get('score', 0)} "
        "explicit judgments to check them against)"
    )

    _step(f"consuming until caught up: join on request id into {settings.log_dir}")
    consumed = _consume(
        settings, folder, traffic.inferences + traffic.feedback_events + traffic.malformed + sum(planted.values())
    )

    judged = experiment = None
    if options.judge:
        experiment = create_experiment(
            settings, " against ".join(DEMO_EXPERIMENT_ARMS), DEMO_EXPERIMENT_ARMS,
            experiment_id=f"demo-{folder.name}", description="the demo's judge run, head to head",
        )  # fmt: skip
        _step(f"experiment {experiment.experiment_id}: {experiment.name} (on {settings.experiments_topic})")
        _step(f"judging {DEMO_JUDGE_SAMPLE} logged requests with the built-in `length` judge (every pair, both orders) "
              f"in experiment {experiment.experiment_id}")  # fmt: skip
        judged = _judge(settings, options, experiment)
        _step(f"consuming the judge's {judged.written} judgments")
        _consume(settings, folder, judged.written)

    _step("compiling the dataset (resolve, derive pairs, clean, sample, split, write formats)")
    result = compile_dataset(settings.log_dir, folder / "dataset", CompileConfig(seed=options.seed))

    report_path, statement = None, None
    if options.report:
        _step("writing the analytics report (model ratings, bias checks, agreement, feedback health, experiments, "
              "implicit rules)")
        report_path, statement = _report(settings, folder, result, consumed, experiment)

    _summary(settings, traffic, consumed, judged, result, report_path, experiment, statement,
             time.monotonic() - started)  # fmt: skip
    return 0


def _simulate(settings: Settings, options: DemoOptions) -> tuple[SimulationStats, dict[str, int]]:
    # end users lean a little towards what is shown first: something true for the report to find
    spec = TrafficSpec(requests=options.requests, seed=options.seed, position_bias_by_source={"APP_USER": 0.3})
    simulator = Traffic(spec)
    raw = create_producer(client_config(settings))

    def send_raw(key: bytes, value: bytes) -> None:  # what a buggy foreign producer would send
        raw.produce(settings.feedback_topic, key=key, value=value)

    with _bar(options.requests, "simulating serving traffic", "req") as bar, PreferenceLogger(settings) as logger:
        traffic = send_to_kafka(simulator, logger, send_raw=send_raw, progress=bar.update)
        # implicit signals (copy, select, dwell, conversion, edit, regenerations) with a planted truth
        # (half of their requests judged explicitly too: the report's check; the other half adds pairs)
        plan = SignalPlan(requests_per_rule=max(10, options.requests // 30), seed=options.seed, explicit_share=0.5)
        planted = send_planted(logger, plan)
        logger.flush(60)
    if raw.flush(30):
        raise RuntimeError("malformed demo messages were not delivered")
    return traffic, planted


def _judge(settings: Settings, options: DemoOptions, experiment: Experiment) -> JudgeSummary:
    config = JudgeConfig(
        evaluator="length",
        key=DEMO_JUDGE_KEY,
        experiment_id=experiment.experiment_id,
        selection=JudgeSelection(sample=DEMO_JUDGE_SAMPLE, seed=options.seed, models=experiment.arms),
        progress=False,
    )
    with _bar(0, "judging", "judgment") as bar:

        def planned(total: int, done: int) -> None:
            bar.reset(total=total)
            bar.update(done)

        return run_judge(settings, config, on_progress=bar.update, on_plan=planned)


def _consume(settings: Settings, folder: Path, expected: int) -> RunStats:
    config = ConsumerConfig(
        group_id=f"prefpair-demo-{folder.name}",
        grace_ms=DEMO_GRACE_MS,
        progress_interval_s=1.0,
        metrics_path=str(folder / "consumer-metrics.json"),
    )
    daemon = ConsumerDaemon(settings, config)
    with _bar(expected, "consuming", "ev") as bar:
        stop = _follow(lambda: daemon.stats.consumed, bar)
        try:
            stats = daemon.run(until_caught_up=True)
        finally:
            stop()
    return stats


def _follow(value: Callable[[], int], bar: Any) -> Callable[[], None]:
    """Move ``bar`` to ``value()`` from a background thread; returns the function that stops it."""
    import threading

    done = threading.Event()

    def loop() -> None:
        while not done.wait(0.2):
            bar.update(max(0, value() - bar.n))
        bar.update(max(0, value() - bar.n))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        thread.join()

    return stop


def _report(
    settings: Settings, folder: Path, result: CompileResult, consumed: RunStats, experiment: Experiment | None
) -> tuple[Path, str | None]:
    """The report's page, and the winner statement of the demo's experiment (None without one)."""
    from prefpair.report import ReportConfig, build_report
    from prefpair.report.experiments import definitions_from_topic

    report = build_report(
        settings.log_dir,
        folder / "report",
        ReportConfig(manifest=result.manifest, dead_letters=consumed.dead_letters, bootstrap_rounds=100),
        definitions_from_topic(settings),  # names and arms, as `prefpair report` reads them
    )
    sections = {e["experiment_id"]: e for e in report.experiments}
    section = sections.get(experiment.experiment_id) if experiment is not None else None
    return report.html_path, None if section is None else str(section["statement"])


def _implicit_line(result: CompileResult) -> str:
    """The pairs each implicit rule gave (the manifest's ``implicit`` section)."""
    manifest = json.loads(result.manifest.read_text(encoding="utf-8"))
    per_rule = manifest.get("implicit", {}).get("per_rule", {})
    total = sum(int(entry.get("pairs", 0)) for entry in per_rule.values())
    rules = ", ".join(f"{rule} {entry.get('pairs', 0)}" for rule, entry in per_rule.items())
    if not per_rule:
        return "none"
    return f"{total} of them (source type IMPLICIT:<rule>: {rules}); the report checks each rule"


def _summary(
    settings: Settings,
    traffic: SimulationStats,
    consumed: RunStats,
    judged: JudgeSummary | None,
    result: CompileResult,
    report_path: Path | None,
    experiment: Experiment | None,
    statement: str | None,
    seconds: float,
) -> None:
    sent = traffic.inferences + traffic.feedback_events + traffic.malformed
    drops = ", ".join(f"{reason} {count}" for reason, count in sorted(result.drop_counts.items()) if count) or "none"
    splits = ", ".join(f"{split} {count}" for split, count in sorted(result.split_counts.items()))
    lines = [
        "",
        f"prefpair demo finished in {seconds:.1f} s",
        f"  events sent         {sent} ({traffic.inferences} inference, {traffic.feedback_events} feedback, "
        f"{traffic.malformed} malformed)",
        f"  joined rows         {consumed.joined} (hot {consumed.joined_hot}, waited {consumed.joined_waited}, "
        f"landed {consumed.joined_landed})",
        f"  orphans             {consumed.orphans} (feedback whose inference never came)",
        f"  dead letters        {consumed.dead_letters} (in topic {settings.dead_letter_topic})",
        f"  duplicates skipped  {consumed.duplicates}",
    ]
    if judged is not None:
        agreement = judged.agreed / max(1, judged.agreed + judged.disagreed)
        lines.append(
            f"  judge run           {judged.written} judgments (key {judged.key}) by `{judged.evaluator}` on "
            f"{judged.inferences} requests; both orders agreed on {agreement:.0%}; run {judged.run_id}"
        )
    if experiment is not None:
        lines.append(f"  experiment          {experiment.experiment_id}: {experiment.name}")
        if statement is not None:
            lines.append(f"                      {statement}")
    lines += [
        f"  pairs               {result.pairs_total}: {splits}",
        f"  implicit pairs      {_implicit_line(result)}",
        f"  signals landed      {consumed.signal_events}",
        f"  drops by reason     {drops}",
        f"  log                 {settings.log_dir}",
        f"  dataset             {result.out_dir}",
        f"  manifest            {result.manifest}",
    ]
    if report_path is not None:
        lines.append(f"  report              {report_path}")
    lines += [
        "",
        "Next: open the report in a browser; read the dataset card (README.md) and manifest.json beside",
        "the JSONL files; `prefpair compile --help` for filters, formats and incremental runs;",
        "`prefpair consume --help` to run the daemon against your own cluster.",
    ]
    print("\n".join(lines))
    log.debug("demo summary: %s", json.dumps({"consumer": consumed.to_json(), "pairs": result.pairs_total}))
