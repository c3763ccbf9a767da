"""Reading what the consumer wrote: event ids per log table, joined rows, the dead-letter topic."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import duckdb
from confluent_kafka import Consumer, KafkaError, TopicPartition
from conftest import settings_env

from prefpair.config import Settings
from prefpair.consumers.dead_letters import header_map
from prefpair.schemas.log import table_files
from prefpair.storage import Storage


def _read(log_dir: Path | Storage, table: str, columns: str) -> duckdb.DuckDBPyRelation | None:
    """``SELECT columns`` over one table's committed files, local or on storage (None: no files)."""
    con = duckdb.connect()
    if isinstance(log_dir, Storage):
        log_dir.attach(con)
    files = [str(f) for f in table_files(log_dir, table)]
    return con.sql(f"SELECT {columns} FROM read_parquet({files})") if files else None


def log_ids(log_dir: Path | Storage) -> dict[str, list[str]]:
    """Event ids per table, with repeats (a duplicate shows as a repeat); the log local or on storage."""
    out: dict[str, list[str]] = {}
    for table, column in (("inference", "inference_event_id"), ("feedback", "feedback_event_id"),
                          ("orphans", "feedback_event_id")):  # fmt: skip
        relation = _read(log_dir, table, column)
        out[table] = [r[0] for r in relation.fetchall()] if relation is not None else []
    return out


def feedback_rows(log_dir: Path | Storage) -> list[dict[str, Any]]:
    relation = _read(log_dir, "feedback", "*")
    return relation.to_arrow_table().to_pylist() if relation is not None else []


def dead_letters(settings: Settings, timeout: float = 20.0) -> list[tuple[bytes, dict[str, str]]]:
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": uuid.uuid4().hex,
                         "enable.partition.eof": True, "auto.offset.reset": "earliest"})  # fmt: skip
    metadata = consumer.list_topics(settings.dead_letter_topic, timeout=10)
    partitions = list(metadata.topics[settings.dead_letter_topic].partitions)
    consumer.assign([TopicPartition(settings.dead_letter_topic, p, 0) for p in partitions])
    out: list[tuple[bytes, dict[str, str]]] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(at_end) < len(partitions) and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
            continue
        out.append((msg.value(), header_map(msg.headers())))
    consumer.close()
    return out



def cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFPAIR_")}
    env.update(settings_env(settings))
    return env
