"""``--engine spark`` against the DuckDB engine: one log, one seed, the same dataset files.

Real Spark in local mode on the machine's Java (no mocks). One Spark session serves the whole
test session (its JVM takes seconds to start): the compiles borrow it (and leave it running).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pyspark.sql import SparkSession

from prefpair.compile import CompileConfig, CompileResult, compile_dataset, dialect
from prefpair.compile.spark import build_session
from prefpair.compile.sql import MACROS
from prefpair.dataset_layout import MANIFEST
from prefpair.simulate import LogBuilder

SEED = 7


FAST_START = {
    # A test's data is tiny and its JVM short-lived: the quick JIT tier only, no generated code
    # to compile per query, few shuffle partitions and no re-planning between stages.
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.sql.adaptive.enabled": "false",
}


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """The test session's one Spark session; every compile borrows it."""
    session = build_session("local[2]", FAST_START)
    yield session
    session.stop()


# --------------------------------------------------------------------------- the log
def _request(log: LogBuilder, request_id: str, n: int, **kw: Any) -> LogBuilder:
    """A request of four candidates of three models, shown in an order that depends on ``n``."""
    ids = ["a", "b", "c", "d"]
    shown = ids[n % 4 :] + ids[: n % 4]
    return log.inference(
        request_id,
        prompt=kw.pop("prompt", f"Question {n}: what is {n} + {n}?"),
        candidates=[("a", f"{2 * n}.", "m1", "v1"), ("b", f"About {2 * n}.", "m2", "v1"),
                    ("c", f"Maybe {2 * n + 1}.", "m3", "v2"), ("d", f"I think {n}.", "m1", "v2")],
        presented=shown,
        environment="prod" if n % 3 else "dev",
        user_id=f"u{n % 5}",
        tags=["beta"] if n % 4 == 0 else ["keep"],
        **kw,
    )  # fmt: skip


def _judge(log: LogBuilder, request_id: str, n: int) -> None:
    """One of six kinds of judgment (and their lifecycles), by ``n``."""
    kind = n % 6
    if kind == 0:  # a preference, then an update that flips it
        log.pairwise(request_id, "a", "b", feedback_id=f"flip-{n}")
        log.update(f"flip-{n}", chosen_id="c", rejected_id="a")
    elif kind == 1:  # a ranking with a tie group, by an annotator
        log.ranking(request_id, ["a", ["b", "c"], "d"], source="HUMAN_ANNOTATOR")
    elif kind == 2:  # reward-model scores on a declared range, with a tie
        rm = {"type": "REWARD_MODEL", "model": "rm", "model_version": "1"}
        stars = {"type": "CONTINUOUS", "min": 1.0, "max": 5.0}
        for candidate, score in (("a", 4.5), ("b", 2.0), ("c", 2.0), ("d", 1.0 + n / 10)):
            log.score(request_id, candidate, score, key="reward", source=rm, config=stars)
    elif kind == 3:  # thumbs, and logits on no declared range (tanh margins)
        log.score(request_id, "a", 1).score(request_id, "b", 0).score(request_id, "c", 0)
        logits = {"type": "REWARD_MODEL", "model": "logits"}
        log.score(request_id, "a", 0.3 * n, key="logit", source=logits)
        log.score(request_id, "d", -1.7, key="logit", source=logits)
        log.score(request_id, "b", 0.3 * n + 0.05, key="logit", source=logits)  # a small margin
    elif kind == 4:  # a correction, a tie and a both-bad
        log.correction(request_id, "b", f"Exactly {2 * n}, since {n} + {n} = {2 * n}.")
        log.pairwise(request_id, "c", "d", outcome="TIE").pairwise(request_id, "c", "d", outcome="BOTH_BAD")
    else:  # deleted, then created again; and one only deleted
        log.pairwise(request_id, "b", "a", feedback_id=f"again-{n}").delete(f"again-{n}")
        log.pairwise(request_id, "d", "a", feedback_id=f"again-{n}")
        log.pairwise(request_id, "a", "c", feedback_id=f"gone-{n}").delete(f"gone-{n}")


def write_log(log_dir: Path) -> tuple[LogBuilder, LogBuilder]:
    """Two partitions of judged requests, plus every edge case the stages drop or keep."""
    first, second = LogBuilder(log_dir, partition=0), LogBuilder(log_dir, partition=1)
    for n in range(36):
        builder = first if n % 2 else second
        system = "Answer tersely." if n % 5 == 0 else None
        _request(builder, f"r{n}", n, system_prompt=system)
        _judge(builder, f"r{n}", n)
    # a chat prompt, one with a tool turn (left out of axolotl_chat_template only)
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
             {"role": "user", "content": "Weather in Paris?"}]  # fmt: skip
    _request(first, "chat", 1, prompt=None, messages=turns, system_prompt="Be brief.").pairwise("chat", "a", "d")
    tool = [{"role": "user", "content": "Weather?"}, {"role": "tool", "content": '{"temp": 21}'}]
    _request(first, "tool", 2, prompt=None, messages=tool).pairwise("tool", "b", "c")
    # one prompt judged in both directions (contradiction), and twice the same way (duplicate)
    for i, (chosen, rejected) in enumerate((("a", "b"), ("a", "b"), ("b", "a"), ("c", "d"), ("c", "d"))):
        _request(first, f"same-{i}", 100, prompt="The same question").pairwise(f"same-{i}", chosen, rejected)
    # an unknown candidate, an empty output, two identical outputs, an update of nothing
    _request(first, "odd", 3).pairwise("odd", "zz", "a")
    first.inference("blank", candidates=[("a", "Yes.", "m1", "v1"), ("b", "  ", "m2", "v1"),
                                         ("c", "Yes.", "m3", "v1")])  # fmt: skip
    first.pairwise("blank", "a", "b").pairwise("blank", "a", "c")
    first.feedback("odd", op="UPDATE", feedback_id="ghost", key="preference", kind="PAIRWISE")
    # orphans: one whose inference never lands, one whose inference lands after the grace
    first.orphan("missing", key="preference", kind="PAIRWISE", outcome="PREFERRED", chosen_id="a", rejected_id="b")
    first.orphan("late", key="preference", kind="PAIRWISE", outcome="PREFERRED", chosen_id="b", rejected_id="a")
    first.commit()
    second.commit()
    _request(first, "late", 4, prompt="A late inference")
    first.commit()
    return first, second


def write_more(first: LogBuilder, second: LogBuilder) -> None:
    """A later segment per partition: new requests, and updates of earlier judgments."""
    for n in range(36, 48):
        builder = first if n % 2 else second
        _request(builder, f"r{n}", n)
        _judge(builder, f"r{n}", n)
    second.update("flip-6", chosen_id="d", rejected_id="c")
    first.pairwise("r1", "d", "c")
    first.commit()
    second.commit()


# --------------------------------------------------------------------------- comparing
def compile_both(log_dir: Path, out: Path, config: dict[str, Any]) -> tuple[CompileResult, CompileResult]:
    """The same config on both engines, into ``out/duckdb/prefs`` and ``out/spark/prefs``."""
    duck = compile_dataset(log_dir, out / "duckdb" / "prefs", CompileConfig.parse(config))
    spark = compile_dataset(log_dir, out / "spark" / "prefs", CompileConfig.parse({**config, "engine": "spark"}))
    return duck, spark


def assert_same_dataset(duck: Path, spark: Path) -> list[str]:
    """Every file byte for byte, the manifest but for its ``config.engine``; the files compared."""
    files = sorted(str(p.relative_to(duck)) for p in duck.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(spark)) for p in spark.rglob("*") if p.is_file())
    for name in files:
        if Path(name).name == MANIFEST:
            manifests = [json.loads((root / name).read_text()) for root in (duck, spark)]
            assert [m["config"].pop("engine") for m in manifests] == ["duckdb", "spark"]
            assert manifests[0] == manifests[1], name
        else:
            assert (duck / name).read_bytes() == (spark / name).read_bytes(), name
    return files


FULL = {
    "splits": {"train": 0.6, "validation": 0.2, "test": 0.2},
    "seed": SEED,
    "include_margin": True,
    "include_ids": True,
    "include_provenance": True,
    "sampling": {"max_pairs_per_prompt": 3, "max_pairs": 40, "stratify_by": "source", "balance_position": True},
}
INCREMENTAL = {
    "incremental": True,
    "formats": ["trl", "trl_unpaired", "openai", "axolotl_chat_template"],
    "splits": {"train": 0.5, "test": 0.5},
    "seed": 3,
    "rankings": "best_worst",
    "contradictions": "latest",
    "text_prompt": "fold",
    "min_margin": 0.1,
    "include_ids": True,
    "filters": {"tags": ["keep"], "model_versions": ["v1", "v2"], "since_ms": 1_790_000_001_000},
    "sampling": {"max_pairs_per_prompt": 2, "stratify_by": "model"},
}


def test_spark_writes_the_same_dataset_as_duckdb(spark: SparkSession, tmp_path: Path) -> None:
    write_log(tmp_path / "log")
    duck, on_spark = compile_both(tmp_path / "log", tmp_path, FULL)
    files = assert_same_dataset(duck.out_dir, on_spark.out_dir)
    assert {"trl/validation.jsonl", "openai/test.meta.jsonl", "trl_unpaired/train.jsonl", "README.md"} <= set(files)
    # the log exercised every stage: each drop happened, the caps bit, every split has pairs
    assert set(duck.drop_counts) == {
        "deleted", "update_without_create", "no_inference", "tie", "both_bad", "unknown_candidate",
        "empty", "identical", "contradictory", "duplicate", "cap_per_prompt", "position_balance", "max_pairs",
    }  # fmt: skip
    assert duck.drop_counts == on_spark.drop_counts and duck.stage_counts == on_spark.stage_counts
    assert duck.pairs_total == 40 and all(duck.split_counts.values())
    assert {"pairwise", "ranking", "score", "correction"} <= {
        json.loads(line)["derivation"] for line in (duck.out_dir / "trl" / "train.jsonl").read_text().splitlines()
    }


def test_spark_incremental_versions_match_duckdb(spark: SparkSession, tmp_path: Path) -> None:
    first, second = write_log(tmp_path / "log")
    duck, on_spark = compile_both(tmp_path / "log", tmp_path, INCREMENTAL)
    assert (duck.version, on_spark.version) == ("v00001", "v00001") and duck.pairs_total > 0
    skips = json.loads(on_spark.manifest.read_text())["counts"]["format_skips"]
    assert skips == {"axolotl_chat_template": {"unsupported_role": 1}}  # the prompt with a tool turn
    assert "below_min_margin" in on_spark.drop_counts and "filtered_tag" in on_spark.drop_counts
    write_more(first, second)
    duck, on_spark = compile_both(tmp_path / "log", tmp_path, INCREMENTAL)
    assert (duck.version, on_spark.version) == ("v00002", "v00002") and duck.pairs_total > 0
    assert duck.stage_counts["pairs_already_emitted"] > 0
    for version in ("v00001", "v00002"):
        assert_same_dataset(tmp_path / "duckdb" / "prefs" / version, tmp_path / "spark" / "prefs" / version)
    state = [(tmp_path / engine / "prefs" / ".compile-state.json").read_text() for engine in ("duckdb", "spark")]
    assert state[0] == state[1]


def test_functions_with_spark_bodies_give_duckdb_values(spark: SparkSession) -> None:
    """The seeded hash sorts as DuckDB's, the prompt bucket and round() are DuckDB's, list_position's NULL."""
    rng = random.Random(SEED)
    texts = [f"{SEED}:{rng.getrandbits(64):x}" for _ in range(300)]
    numbers = [rng.uniform(-3, 3) for _ in range(300)] + [0.0000005, 2.5e-7, 0.1234565, -0.0000015, 1 / 3, 10.0]
    # decimals that end in a 5 just past the sixth place: ties to their spelling, not to their value
    numbers += [float(f"{rng.randint(-(10**7), 10**7)}5e-7") for _ in range(300)]
    con = duckdb.connect()
    expressions = "md5_number(t) AS h, prompt_bucket(md5(t)) AS bucket, list_position(['x', t], t) AS at"
    for macro in MACROS:
        con.execute(macro)
    rows = con.execute(f"SELECT t, {expressions} FROM (SELECT unnest(?) AS t) ORDER BY h", [texts]).fetchall()
    spark.createDataFrame([(t,) for t in texts], "t string").createOrReplaceTempView("texts")
    got = spark.sql(dialect.query(f"SELECT t, {expressions} FROM texts ORDER BY h")).collect()
    # the same order (DuckDB sorts a 128-bit integer, Spark its hex string), the same values
    assert [(t, f"{h:032x}", bucket, at) for t, h, bucket, at in rows] == [tuple(r) for r in got]
    rounded = con.execute("SELECT x, round(x, 6) FROM (SELECT unnest(?::DOUBLE[]) AS x) ORDER BY x", [numbers])
    spark.createDataFrame([(x,) for x in numbers], "x double").createOrReplaceTempView("numbers")
    on_spark = spark.sql(dialect.query("SELECT x, round(x, 6) AS r FROM numbers ORDER BY x")).collect()
    assert rounded.fetchall() == [(r["x"], r["r"]) for r in on_spark]
    assert spark.sql(dialect.query("SELECT list_position(['a'], 'b') AS at")).collect()[0]["at"] is None
