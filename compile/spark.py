"""The Spark engine: the compile's stages on Apache Spark (``prefpair compile --engine spark``).

Same stages, same SQL: :class:`SparkPipeline` is the :class:`~prefpair.compile.pipeline.Pipeline`
on a workspace whose statements run on Spark, translated by :mod:`prefpair.compile.dialect`.
Spark reads the log's committed Parquet files itself (every executor must see them). Each temp
table of a stage is a DataFrame computed once (a local checkpoint) and registered as a temp view of a
session of its own (:meth:`SparkSession.newSession`: the views of two compiles never meet); an
``UPDATE`` is a new DataFrame with the changed rows, an ``INSERT`` a union.

What leaves Spark is small or final: counts, and the rows the job writes (the selected pairs
joined to their texts, the selected ids), collected as Arrow into the DuckDB connection that
:mod:`prefpair.compile.job` writes every format from. One writer for both engines: on the same
log and seed, the same bytes.

The session: the caller's active one if there is one (a notebook's, a test's: left running),
else one on ``spark_master`` (``local[2]``: Spark inside this process's JVM), stopped at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from prefpair.compile import dialect
from prefpair.compile.config import CompileConfig
from prefpair.compile.exceptions import SparkUnavailableError
from prefpair.compile.pipeline import Pipeline
from prefpair.compile.workspace import Workspace
from prefpair.schemas.log import FEEDBACK_LOG, INFERENCE_LOG, ORPHAN_LOG

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

SESSION_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "true",
}
"""Settings of a session the compile starts (a caller's own session keeps its settings)."""
LOCAL_SHUFFLE_PARTITIONS = 4
"""Shuffle partitions on a ``local[...]`` master: Spark's 200 are for clusters."""
ROW_ID = "__prefpair_row_id"
EXPORTED = ("selected", "unpaired")
"""The stage tables :mod:`prefpair.compile.job` reads after the run (counts, card title, emitted ids)."""


def build_session(master: str, conf: Mapping[str, str] | None = None) -> SparkSession:
    """A Spark session on ``master`` with the compile's settings and ``conf`` (or the running one, as it is)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkUnavailableError("pyspark is not installed (pip install 'prefpair[spark]')") from None
    builder = SparkSession.builder.master(master).appName("prefpair-compile")
    settings = dict(SESSION_CONF)
    if master.startswith("local"):
        settings["spark.sql.shuffle.partitions"] = str(LOCAL_SHUFFLE_PARTITIONS)
    for key, value in {**settings, **(conf or {})}.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # Spark reports a missing or old Java as a generic runtime error
        raise SparkUnavailableError(f"could not start Spark on {master!r} (Java 17+ needed): {exc}") from exc
    session.sparkContext.setLogLevel("WARN")
    return session


@contextmanager
def spark_session(master: str) -> Iterator[SparkSession]:
    """A fresh session (its own temp views) of the caller's active Spark session, else of one started
    on ``master`` and stopped on exit."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkUnavailableError("pyspark is not installed (pip install 'prefpair[spark]')") from None
    active = SparkSession.getActiveSession()
    if active is not None:
        yield active.newSession()
        return
    owned = build_session(master)
    try:
        yield owned.newSession()
    finally:
        owned.stop()


class SparkWorkspace(Workspace):
    """A :class:`Workspace` whose statements run on Spark; ``con`` receives what is written out."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        spark: SparkSession,
        config: CompileConfig,
        files: Mapping[str, Sequence[Path | str]],
        emitted_files: Sequence[Path] = (),
    ) -> None:
        super().__init__(con, config, files, emitted_files)
        self.spark = spark
        self.frames: dict[str, DataFrame] = {}
        """The DataFrame behind each temp view (released by :meth:`release`)."""

    # ------------------------------------------------------------------ statements
    def execute(self, sql: str) -> None:
        started = time.monotonic()
        translated = dialect.statement(sql)
        if isinstance(translated, dialect.CreateTable):
            self._keep(translated.name, self.spark.sql(translated.query))
        elif isinstance(translated, dialect.InsertInto):
            old = self.frames[translated.name]
            added = self.spark.sql(translated.query)
            self._keep(translated.name, old.union(added.toDF(*old.columns)))
        elif isinstance(translated, dialect.Update):
            self._update(translated)
        elif isinstance(translated, dialect.DropTable):
            self.spark.catalog.dropTempView(translated.name)
            self._release(translated.name)
        else:
            self.spark.sql(translated).collect()
        log.debug("compile (spark): %.2f s  %s", time.monotonic() - started, " ".join(sql.split())[:100])

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.spark.sql(dialect.query(sql)).collect()]

    def _keep(self, name: str, frame: DataFrame) -> None:
        """Compute ``frame`` once and make it the temp view ``name`` (replacing an earlier one).

        A local checkpoint, not a cache: it cuts the plan, so a table updated five times is not
        planned (and printed) with five copies of its history.
        """
        frame = frame.localCheckpoint(eager=True)
        frame.createOrReplaceTempView(name)
        self.frames[name] = frame

    def _release(self, name: str) -> None:
        """Forget a table (Spark frees its checkpointed blocks once nothing refers to them)."""
        self.frames.pop(name, None)

    def _update(self, update: dialect.Update) -> None:
        """The table with the column changed on the rows the update matches.

        Rows get an id from their place in the checkpointed table (partition, position: the same
        in both uses below, as the table is computed already), the update's query gives the ids
        it changes, and a join puts the new values in.
        """
        from pyspark.sql import functions as F

        base_name = f"{update.table}__before_update"
        base = self.frames[update.table].withColumn(ROW_ID, F.monotonically_increasing_id())
        base.createOrReplaceTempView(base_name)
        hits = self.spark.sql(
            f"SELECT {ROW_ID}, min(value) AS __value, TRUE AS __hit FROM ({update.hits(base_name, ROW_ID)}) "
            f"GROUP BY {ROW_ID}"
        )
        changed = (
            base.join(hits, ROW_ID, "left")
            .withColumn(update.column, F.when(F.col("__hit"), F.col("__value")).otherwise(F.col(update.column)))
            .drop(ROW_ID, "__value", "__hit")
        )
        self._keep(update.table, changed)
        self.spark.catalog.dropTempView(base_name)

    # ------------------------------------------------------------------ inputs
    def log_table(self, table: str) -> str:
        """A temp view of one log table's committed files, read by Spark (schemas merged by name)."""
        name = f"log_{table}"
        if name not in self.frames:
            paths = self.files.get(table, [])
            if paths:
                frame = self.spark.read.option("mergeSchema", "true").parquet(*[str(p) for p in paths])
            else:
                schema = {"feedback": FEEDBACK_LOG, "orphans": ORPHAN_LOG, "inference": INFERENCE_LOG}[table]
                frame = self.spark.createDataFrame(schema.empty_table())
            frame.createOrReplaceTempView(name)
            self.frames[name] = frame
        return name

    def emitted(self, kind: str) -> str | None:
        """A temp view of the ids of ``kind`` that earlier versions emitted (their ``.emitted.parquet``).

        Read here and handed to Spark: Spark's file sources skip files whose name starts with a dot.
        """
        if not self.emitted_files:
            return None
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        ids = pa.concat_tables([pq.read_table(path, columns=["id", "kind"]) for path in self.emitted_files])
        name = f"emitted_{kind}"
        self._keep(name, self.spark.createDataFrame(ids.filter(pc.equal(ids["kind"], kind)).select(["id"])))
        return name

    # ------------------------------------------------------------------ outputs
    def output(self, name: str, query: str, order: str) -> None:
        """The output's rows, computed by Spark, as the table ``name`` of the writer's connection."""
        self._export(name, self.spark.sql(dialect.query(query)))
        self.outputs[name] = (name, f"ORDER BY {order}")

    def export(self, table: str) -> None:
        """A stage table as a table of the same name on the writer's connection."""
        if table in self.frames:
            self._export(table, self.frames[table])

    def _export(self, name: str, frame: DataFrame) -> None:
        started = time.monotonic()
        rows = frame.toArrow()
        view = f"{name}_from_spark"
        self.con.register(view, rows)
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {view}")
        self.con.unregister(view)
        log.info("compile (spark): collected %s (%d rows) in %.1f s", name, rows.num_rows, time.monotonic() - started)

    def release(self) -> None:
        """Drop every temp view and free what Spark keeps of them."""
        for name in list(self.frames):
            self.spark.catalog.dropTempView(name)
            self._release(name)


class SparkPipeline(SparkWorkspace, Pipeline):
    """The compile's stages on Spark; after :meth:`run`, ``con`` holds what the job writes out."""

    def run(self) -> None:
        super().run()
        for table in EXPORTED:
            self.export(table)


@contextmanager
def spark_pipeline(
    con: duckdb.DuckDBPyConnection,
    config: CompileConfig,
    files: Mapping[str, Sequence[Path | str]],
    emitted: Sequence[Path],
) -> Iterator[SparkPipeline]:
    """A :class:`SparkPipeline` on a session of its own (see :func:`spark_session`), released on exit."""
    remote = [str(f) for listed in files.values() for f in listed if isinstance(f, str)]
    if remote:
        raise SparkUnavailableError(
            f"the log is on object storage ({remote[0]}): Spark reads it through its own S3 connector "
            "(hadoop-aws, s3a://), which prefpair does not set up yet; compile it with the DuckDB engine"
        )
    with spark_session(config.spark_master) as spark:
        pipeline = SparkPipeline(con, spark, config, files, emitted)
        try:
            yield pipeline
        finally:
            pipeline.release()
