"""Counters of the consumer daemon, as a progress line, a JSON file and Prometheus text.

The JSON file and the ``.prom`` file beside it are rewritten atomically every progress
interval, so a scraper (node_exporter's textfile collector, or anything reading JSON) never
sees a half-written file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prefpair.durable import write_text_atomic


@dataclass
class RunStats:
    """What one run of the daemon did; also its live metrics."""

    consumed: int = 0
    inference_events: int = 0
    feedback_events: int = 0
    signal_events: int = 0
    joined: int = 0
    joined_hot: int = 0
    joined_waited: int = 0
    joined_landed: int = 0
    orphans: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    segments: int = 0
    rows_written: int = 0
    pending: int = 0
    hot_entries: int = 0
    hot_bytes: int = 0
    hot_budget_bytes: int = 0
    hot_evictions: int = 0
    landed_lookups: int = 0
    rebalances: int = 0
    rss_bytes: int = 0
    pauses: int = 0
    enforced_order: int = 0
    queued: int = 0
    stream_time_ms: int = 0
    busy_seconds: float = 0.0
    busy_cpu_seconds: float = 0.0
    cpu_seconds: float = 0.0
    assigned_partitions: list[int] = field(default_factory=list)
    lag: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def current_rss() -> int:
    """Resident memory of this process in bytes (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def write_metrics(path: Path, stats: RunStats, group_id: str) -> None:
    """Write ``path`` (JSON) and ``path`` with suffix ``.prom`` (Prometheus text format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"group_id": group_id, **stats.to_json()}, indent=2, sort_keys=True))
    lines = []
    for name, value in stats.to_json().items():
        if isinstance(value, int):
            gauges = {"pending", "hot_entries", "hot_bytes", "hot_budget_bytes", "rss_bytes", "queued",
                      "stream_time_ms"}
            kind = "gauge" if name in gauges else "counter"
            metric = f"prefpair_consumer_{name}" + ("_total" if kind == "counter" else "")
            lines += [f"# TYPE {metric} {kind}", f'{metric}{{group="{group_id}"}} {value}']
    lines.append("# TYPE prefpair_consumer_lag gauge")
    for key, lag in sorted(stats.lag.items()):
        topic, _, partition = key.rpartition("/")
        lines.append(f'prefpair_consumer_lag{{group="{group_id}",topic="{topic}",partition="{partition}"}} {lag}')
    write_text_atomic(path.with_suffix(".prom"), "\n".join(lines) + "\n")
