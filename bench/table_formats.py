"""How prefpair's consumer should commit a log segment: a conditional PUT, Delta Lake or Iceberg.

    .venv/bin/python bench/table_formats.py [--rows 2000] [--small-rows 20] [--commits 50]

Issue 12 item 2. A segment (one partition's rows for an offset range) must be committed exactly
once, with the Kafka offsets it ends at. The candidates, each against a local folder and against
the tests' real S3 server (SeaweedFS, prefpair/s3server.py):

- ``put``: what prefpair does (``prefpair.consumers.segments.write_segment``): Parquet files, then
  ``state.json`` created with ``If-None-Match: *`` on S3 (locally: fsync and a rename);
- ``delta``: ``deltalake`` (delta-rs) appends, the offsets as an application transaction
  (``txn`` action: app id = partition, version = the next offset), as Spark Structured Streaming does;
- ``iceberg``: ``pyiceberg`` appends through a SQL catalog on sqlite, the offsets in the snapshot
  summary, as the Iceberg Kafka Connect sink does.

Measured for each: one commit of a segment of ``--rows`` rows shaped like the log's inference
table (median of 5), ``--commits`` sequential commits of small segments (commits/s over the
first 20; first 5 against last 5: growth with history), what a second writer of the same offsets
sees, and what resuming costs (reading the newest offsets back). deltalake and pyiceberg are not
dependencies of prefpair; install them into the venv to run this. Writes the markdown table to
bench/results/table_formats.md.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from prefpair.consumers.exceptions import SegmentCommitError
from prefpair.consumers.segments import ResumeState, read_resume_state, rows_to_table, write_segment
from prefpair.s3server import seaweed_s3
from prefpair.schemas.log import INFERENCE_LOG, SegmentName
from prefpair.storage import Storage

try:
    import deltalake
    from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
except ImportError:
    deltalake = None  # type: ignore[assignment]
try:
    import pyiceberg
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.exceptions import CommitFailedException
except ImportError:
    pyiceberg = None  # type: ignore[assignment]

RESULTS = Path(__file__).resolve().parent / "results" / "table_formats.md"
TOPIC = "inference"
PARTITION = 0
APP_ID = f"prefpair-{TOPIC}-{PARTITION}"
"""Delta txn app id / Iceberg summary key: one per partition (the version is its next offset)."""
SUMMARY_KEY = f"prefpair.{TOPIC}.{PARTITION}.next"
WORDS = (
    "the",
    "model",
    "answer",
    "prompt",
    "user",
    "token",
    "context",
    "reason",
    "step",
    "result",
    "value",
    "function",
    "data",
    "because",
    "which",
    "would",
    "should",
    "example",
    "python",
    "error",
    "return",
    "list",
    "table",
    "write",
    "read",
)


def segment_table(rows: int, start: int, rng: random.Random) -> pa.Table:
    """``rows`` INFERENCE_LOG rows (~3 KB each: a 1,000-char prompt, two 1,000-char candidates)."""

    def text(chars: int) -> str:
        return " ".join(rng.choices(WORDS, k=chars // 6))[:chars]

    def candidate(i: int) -> dict[str, Any]:
        return {"candidate_id": f"c{i}", "text": text(1000), "messages": None, "model_name": "bench-model",
                "model_version": "1", "model_checkpoint": None, "temperature": 0.7, "top_p": 1.0,
                "max_tokens": 512, "seed": None, "sampling_extra": [], "finish_reason": "stop",
                "prompt_tokens": 250, "completion_tokens": 250, "latency_ms": 800.0}  # fmt: skip

    return rows_to_table(
        [{"inference_event_id": f"e{start + i}", "request_id": f"r{start + i}",
          "inference_timestamp_ms": 1_700_000_000_000 + start + i, "system_prompt": None, "prompt": text(1000),
          "messages": None, "candidates": [candidate(0), candidate(1)], "presentation_order": ["c0", "c1"],
          "user_id": f"u{i % 50}", "session_id": None, "environment": "prod", "tags": [],
          "inference_metadata": [], "inference_topic": TOPIC, "inference_partition": PARTITION,
          "inference_offset": start + i} for i in range(rows)],
        INFERENCE_LOG,
    )  # fmt: skip


def with_offsets(table: pa.Table, start: int) -> pa.Table:
    """The same rows renumbered from ``start`` (one table built once, committed at many offsets)."""
    index = INFERENCE_LOG.get_field_index("inference_offset")
    return table.set_column(
        index, INFERENCE_LOG.field(index), pa.array(range(start, start + table.num_rows), pa.int64())
    )


@dataclass
class Where:
    """One backend: a local folder or a prefix on the S3 server, as each library wants it."""

    name: str
    folder: Path
    storage: Storage | None = None
    endpoint: Any = None

    def put_log(self, run: str) -> Path | Storage:
        return self.storage / run if self.storage is not None else self.folder / run

    def delta_uri(self, run: str) -> str:
        return f"s3://{self.endpoint.bucket}/delta/{run}" if self.endpoint else str(self.folder / run)

    def delta_options(self, conditional_put: bool = True) -> dict[str, str]:
        if not self.endpoint:
            return {}
        options = {"AWS_ENDPOINT_URL": self.endpoint.url, "AWS_ACCESS_KEY_ID": self.endpoint.access_key_id,
                   "AWS_SECRET_ACCESS_KEY": self.endpoint.secret_access_key, "AWS_REGION": "us-east-1",
                   "AWS_ALLOW_HTTP": "true"}  # fmt: skip
        if conditional_put:
            options["conditional_put"] = "etag"
        return options

    def iceberg_catalog(self, run: str) -> Any:
        (self.folder / run).mkdir(parents=True, exist_ok=True)
        properties = {"uri": f"sqlite:///{self.folder / run / 'catalog.db'}"}
        if self.endpoint:
            properties.update({"warehouse": f"s3://{self.endpoint.bucket}/iceberg/{run}",
                               "s3.endpoint": self.endpoint.url, "s3.access-key-id": self.endpoint.access_key_id,
                               "s3.secret-access-key": self.endpoint.secret_access_key,
                               "s3.region": "us-east-1"})  # fmt: skip
        else:
            properties["warehouse"] = f"file://{self.folder / run / 'warehouse'}"
        catalog = SqlCatalog("bench", **properties)
        catalog.create_namespace_if_not_exists("prefpair")
        return catalog


class Candidate:
    """One way to commit: ``commit`` a segment [start, end); ``resume`` reads the next offset back."""

    name = ""

    def __init__(self, where: Where, run: str) -> None:
        self.where = where
        self.run = run

    def commit(self, table: pa.Table, start: int, end: int) -> None:
        raise NotImplementedError

    def resume(self) -> int | None:
        raise NotImplementedError

    def second_writer(self, table: pa.Table, start: int, end: int) -> str:
        """What a second writer of the segment [start, end) sees, after the first committed it."""
        raise NotImplementedError


class ConditionalPut(Candidate):
    name = "put (prefpair)"

    def __init__(self, where: Where, run: str) -> None:
        super().__init__(where, run)
        self.log = where.put_log(run)

    def commit(self, table: pa.Table, start: int, end: int) -> None:
        name = SegmentName(PARTITION, start, end, 0, 0)
        write_segment(self.log, name, {"inference": table}, ResumeState(PARTITION, inference_next=end, feedback_next=0))

    def resume(self) -> int | None:
        return read_resume_state(self.log, PARTITION).inference_next

    def second_writer(self, table: pa.Table, start: int, end: int) -> str:
        # A late writer (the old owner after a rebalance) and two writers racing the same segment.
        outcomes = []
        try:
            self.commit(table, start, end)
            outcomes.append("same segment again: committed (WRONG)")
        except SegmentCommitError as exc:
            outcomes.append(f"same segment again: SegmentCommitError ({str(exc).rsplit(': ', 1)[-1][:120]})")
        barrier = threading.Barrier(2)
        results: list[str] = []

        def race() -> None:
            barrier.wait()
            try:
                self.commit(table, end, end + table.num_rows)
                results.append("ok")
            except SegmentCommitError:
                results.append("rejected")

        threads = [threading.Thread(target=race) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        outcomes.append(f"2 racing writers: {sorted(results)}")
        return "; ".join(outcomes)


class Delta(Candidate):
    name = "delta (deltalake)"

    def __init__(self, where: Where, run: str) -> None:
        super().__init__(where, run)
        self.uri = where.delta_uri(run)
        self.options = where.delta_options()

    def commit(self, table: pa.Table, start: int, end: int, into: Any = None) -> None:
        properties = CommitProperties(app_transactions=[Transaction(APP_ID, end)])
        write_deltalake(into if into is not None else self.uri, table, mode="append",
                        storage_options=self.options or None, commit_properties=properties)  # fmt: skip

    def resume(self) -> int | None:
        return DeltaTable(self.uri, storage_options=self.options or None).transaction_version(APP_ID)

    def rows(self) -> int:
        return int(DeltaTable(self.uri, storage_options=self.options or None).to_pyarrow_dataset().count_rows())

    def second_writer(self, table: pa.Table, start: int, end: int) -> str:
        outcomes = []
        before = self.rows()
        try:
            self.commit(table, start, end)  # the same offsets again, no check by the writer
            outcomes.append(f"same txn version again: accepted, rows {before} -> {self.rows()} (duplicates)")
        except Exception as exc:
            outcomes.append(f"same txn version again: rejected ({type(exc).__name__})")
        # Two writers that both checked transaction_version before either committed.
        stale = DeltaTable(self.uri, storage_options=self.options or None)
        checked = stale.transaction_version(APP_ID)
        nxt = end + table.num_rows
        self.commit(table, end, nxt)
        try:
            self.commit(table, end, nxt, into=stale)
            outcomes.append(f"stale writer (saw txn {checked}) after the winner: accepted (duplicates)")
        except Exception as exc:
            outcomes.append(
                f"stale writer (saw txn {checked}) after the winner: rejected ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160]})"
            )
        return "; ".join(outcomes)


class Iceberg(Candidate):
    name = "iceberg (pyiceberg)"

    def __init__(self, where: Where, run: str) -> None:
        super().__init__(where, run)
        self.catalog = where.iceberg_catalog(run)
        self.table = self.catalog.create_table(f"prefpair.{run.replace('-', '_')}", schema=INFERENCE_LOG)
        self.identifier = self.table.name()

    def commit(self, table: pa.Table, start: int, end: int, into: Any = None) -> None:
        target = into if into is not None else self.table
        target.append(table, snapshot_properties={SUMMARY_KEY: str(end)})

    def resume(self) -> int | None:
        snapshot = self.catalog.load_table(self.identifier).current_snapshot()
        value = snapshot.summary.additional_properties.get(SUMMARY_KEY) if snapshot else None
        return int(value) if value is not None else None

    def rows(self) -> int:
        snapshot = self.catalog.load_table(self.identifier).current_snapshot()
        return int(snapshot.summary.additional_properties.get("total-records", 0)) if snapshot else 0

    def second_writer(self, table: pa.Table, start: int, end: int) -> str:
        outcomes = []
        before = self.rows()
        fresh = self.catalog.load_table(self.identifier)
        try:
            self.commit(table, start, end, into=fresh)  # the same offsets again, no check by the writer
            outcomes.append(f"same offsets again: accepted, rows {before} -> {self.rows()} (duplicates)")
        except Exception as exc:
            outcomes.append(f"same offsets again: rejected ({type(exc).__name__})")
        # Two writers that loaded the table (and its offsets) before either committed.
        stale = self.catalog.load_table(self.identifier)
        nxt = end + table.num_rows
        self.commit(table, end, nxt, into=self.catalog.load_table(self.identifier))
        winner = self.rows()
        try:
            self.commit(table, end, nxt, into=stale)
            outcomes.append(
                f"stale writer (loaded before the winner) after the winner: accepted, rows {winner} -> "
                f"{self.rows()} (duplicates)"
            )
        except CommitFailedException:
            outcomes.append("stale writer after the winner: CommitFailedException (catalog's optimistic check)")
        return "; ".join(outcomes)


@dataclass
class Result:
    candidate: str
    where: str
    big_ms: float | None = None
    commits_per_s: float | None = None
    first5_ms: float | None = None
    last5_ms: float | None = None
    resume_ms: float | None = None
    resumed_ok: bool | None = None
    second_writer: str = ""
    notes: list[str] = field(default_factory=list)


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def measure(kind: type[Candidate], where: Where, big: pa.Table, small: pa.Table, commits: int, run: str) -> Result:
    result = Result(kind.name, where.name)
    tag = kind.__name__.lower()
    try:
        # Segments of big.num_rows rows: 1 warm-up commit, then the median of 5.
        candidate = kind(where, f"{tag}-big-{run}")
        offset = 0
        times = []
        for i in range(6):
            n = big.num_rows
            ms = timed(lambda o=offset, n=n: candidate.commit(with_offsets(big, o), o, o + n))
            offset += n
            if i:
                times.append(ms)
        result.big_ms = statistics.median(times)
        # Many small segments: commits/s over the first 20, and first 5 against last 5.
        candidate = kind(where, f"{tag}-small-{run}")
        offset = 0
        times = []
        for _ in range(commits):
            n = small.num_rows
            times.append(timed(lambda o=offset, n=n: candidate.commit(with_offsets(small, o), o, o + n)))
            offset += n
        result.commits_per_s = 20 / (sum(times[:20]) / 1000)
        result.first5_ms = statistics.median(times[:5])
        result.last5_ms = statistics.median(times[-5:])
        resumes: list[int | None] = []
        result.resume_ms = statistics.median([timed(lambda: resumes.append(candidate.resume())) for _ in range(3)])
        result.resumed_ok = all(value == offset for value in resumes)
        if not result.resumed_ok:
            result.notes.append(f"resume read {resumes}, expected {offset}")
        result.second_writer = candidate.second_writer(small, offset - small.num_rows, offset)
    except Exception as exc:
        result.notes.append(f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
        traceback.print_exc()
    return result


def repeated(kind: type[Candidate], where: Where, big: pa.Table, small: pa.Table, args: argparse.Namespace) -> Result:
    """``args.runs`` measurements (each in fresh tables); the median of each figure, the first's outcomes."""
    runs = []
    for run in range(args.runs):
        runs.append(measure(kind, where, big, small, args.commits, f"r{run}"))
        print(runs[-1], flush=True)
    result = runs[0]
    for name in ("big_ms", "commits_per_s", "first5_ms", "last5_ms", "resume_ms"):
        values = [getattr(r, name) for r in runs if getattr(r, name) is not None]
        setattr(result, name, statistics.median(values) if values else None)
        if name == "big_ms" and values:
            result.notes.append(
                f"commit of {big.num_rows:,} rows per run (ms): " + ", ".join(f"{v:.0f}" for v in values)
            )
    result.resumed_ok = all(r.resumed_ok for r in runs)
    result.notes += [note for r in runs[1:] for note in r.notes if not note.startswith("commit of")]
    return result


def delta_without_conditional_put(where: Where, table: pa.Table) -> str:
    """What delta-rs does on this S3 server without ``conditional_put`` (no locking provider either):
    a commit, then a stale writer (loaded before it) of the same txn, as in ``Delta.second_writer``."""
    uri = f"s3://{where.endpoint.bucket}/delta/no-conditional-put"
    options = where.delta_options(conditional_put=False)
    n = table.num_rows

    def commit(into: Any, end: int) -> None:
        write_deltalake(into, table, mode="append", storage_options=options,
                        commit_properties=CommitProperties(app_transactions=[Transaction(APP_ID, end)]))  # fmt: skip

    def rows() -> int:
        return int(DeltaTable(uri, storage_options=options).to_pyarrow_dataset().count_rows())

    try:
        commit(uri, n)
    except Exception as exc:
        return f"delta-rs without `conditional_put`: {type(exc).__name__}: {str(exc).splitlines()[0][:240]}"
    stale = DeltaTable(uri, storage_options=options)
    commit(uri, 2 * n)
    try:
        commit(stale, 2 * n)
        outcome = f"accepted, rows {2 * n} -> {rows()}"
    except Exception as exc:
        outcome = f"rejected ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return (f"delta-rs without `conditional_put` (no locking provider): commits work; a stale writer of the "
            f"same txn after the winner: {outcome}")  # fmt: skip


def if_none_match_probe(where: Where) -> str:
    """Does the S3 server honour ``If-None-Match: *`` (the put candidate's commit)? Create one key twice."""
    assert where.storage is not None
    probe = where.storage / "probe" / "marker"
    probe.write_text("first", exclusive=True)
    try:
        probe.write_text("second", exclusive=True)
        return "SeaweedFS and `If-None-Match: *`: the second create was ACCEPTED (no conditional PUT here)"
    except FileExistsError:
        return (
            f"SeaweedFS and `If-None-Match: *`: the second create of one key is refused (412); "
            f"the object keeps {probe.read_text()!r}"
        )


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def ratio(value: float | None, base: float | None, higher_is_better: bool = False) -> str:
    if value is None or not base:
        return ""
    return f" ({value / base:.1f}x)"


def markdown(results: list[Result], args: argparse.Namespace, notes: list[str], seconds: float) -> str:
    lines = [
        "# Committing a log segment: conditional PUT vs Delta Lake vs Iceberg",
        "",
        f"`bench/table_formats.py --rows {args.rows} --small-rows {args.small_rows} --commits {args.commits} "
        f"--runs {args.runs}`, medians of the runs, "
        f"{platform.python_version()}, pyarrow {pa.__version__}, deltalake "
        f"{getattr(deltalake, '__version__', 'n/a')}, pyiceberg {getattr(pyiceberg, '__version__', 'n/a')}, "
        f"S3: SeaweedFS (`weed mini`) on loopback; {seconds:.0f} s in all. Ratios are to `put` on the same backend.",
        "",
        f"| backend | candidate | commit of {args.rows:,} rows (ms, median) | commits/s, 20 x "
        f"{args.small_rows} rows | first 5 / last 5 of {args.commits} (ms) | resume (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for res in results:
        base = next((r for r in results if r.where == res.where and r.candidate.startswith("put")), None)
        lines.append(
            f"| {res.where} | {res.candidate} | {fmt(res.big_ms, 0)}{ratio(res.big_ms, base and base.big_ms)} | "
            f"{fmt(res.commits_per_s)}{ratio(res.commits_per_s, base and base.commits_per_s)} | "
            f"{fmt(res.first5_ms, 0)} / {fmt(res.last5_ms, 0)} | "
            f"{fmt(res.resume_ms)}{'' if res.resumed_ok in (True, None) else ' (WRONG)'} |"
        )
    lines += ["", "What a second writer of the same offsets sees:", ""]
    for res in results:
        lines.append(f"- {res.where}, {res.candidate}: {res.second_writer or 'n/a'}")
        lines += [f"  - {note}" for note in res.notes]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000, help="rows of the big segment [2000, ~3 KB each]")
    parser.add_argument("--small-rows", type=int, default=20, help="rows of each small segment [20]")
    parser.add_argument("--commits", type=int, default=50, help="sequential small commits [50]")
    parser.add_argument("--runs", type=int, default=3, help="measure each candidate this many times [3]")
    parser.add_argument("--no-s3", action="store_true", help="local folder only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    missing = [name for name, module in (("deltalake", deltalake), ("pyiceberg[sql-sqlite,pyarrow]", pyiceberg))
               if module is None]  # fmt: skip
    if missing:
        print(f"table_formats: {' and '.join(missing)} missing (not prefpair dependencies). Run:\n"
              f"  .venv/bin/pip install deltalake 'pyiceberg[sql-sqlite,pyarrow]'", file=sys.stderr)  # fmt: skip
        return 2
    started = time.perf_counter()
    rng = random.Random(12)
    big = segment_table(args.rows, 0, rng)
    small = big.slice(0, args.small_rows)
    print(f"segment: {args.rows} rows, {big.nbytes / 1e6:.1f} MB in Arrow", flush=True)
    results: list[Result] = []
    notes: list[str] = []
    candidates: list[type[Candidate]] = [ConditionalPut, Delta, Iceberg]
    with tempfile.TemporaryDirectory(prefix="prefpair-formats-") as tmp:
        home = Path(tmp)
        local = Where("local", home / "local")
        local.folder.mkdir()
        for kind in candidates:
            results.append(repeated(kind, local, big, small, args))
        if not args.no_s3:
            with seaweed_s3(home / "s3") as endpoint:
                s3 = Where("S3", home / "s3-side", endpoint.root("put"), endpoint)
                s3.folder.mkdir()
                notes.append(if_none_match_probe(s3))
                notes.append(delta_without_conditional_put(s3, small))
                print(*notes, sep="\n", flush=True)
                for kind in candidates:
                    results.append(repeated(kind, s3, big, small, args))
    text = markdown(results, args, notes, time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
