"""``prefpair erase``: request the erasure of a user, a request or a session, and carry it out on the log.

The request goes to the erasure topic first (the audit trail: who, what, when), then the log's
affected segments are rewritten without the rows (:mod:`prefpair.consumers.erasure`). Running
consumers acknowledge the request (every segment they write afterwards leaves the rows out); the
command waits for them, rewrites once more what they wrote meanwhile, and reports the erasure
complete with the status file it wrote, and the compiled dataset versions that held the rows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prefpair.config import Settings
from prefpair.consumers.config import CONSUMER_FLAGS
from prefpair.consumers.daemon import log_storage
from prefpair.consumers.erasure import (
    DEFAULT_READER_GRACE_S,
    ErasureReport,
    affected_versions,
    erase_from_log,
    erased_request_ids,
    lagging_consumers,
    read_statuses,
    write_status,
)
from prefpair.dataset_layout import MANIFEST
from prefpair.erasures import ErasureError, erasure_request, publish_erasure
from prefpair.flags import Flags


class EraseCommand(BaseModel):
    """What ``prefpair erase`` erases, and how long it waits for running consumers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str | None = Field(default=None, description="erase every request of this user id")
    request_id: str | None = Field(default=None, description="erase this request and its feedback")
    session_id: str | None = Field(default=None, description="erase every request of this session id")
    requested_by: str = Field(default="cli", min_length=1, description="who asks (recorded in the audit trail)")
    reader_grace_s: float = Field(
        default=DEFAULT_READER_GRACE_S, ge=0, description="seconds old segment generations stay for readers mid-query",
        json_schema_extra={"flag": "--reader-grace"},
    )
    consumer_wait_s: float = Field(
        default=120.0, ge=0, description="seconds to wait for running consumers to acknowledge the request",
        json_schema_extra={"flag": "--consumer-wait"},
    )
    datasets: str | None = Field(
        default=None, description="a compiled dataset (or --incremental root) whose affected versions to list, "
        "with the command that rebuilds it",
    )


ERASE_FLAGS = Flags(EraseCommand, env_prefix="PREFPAIR_ERASE_")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "erase", help="erase a user's, request's or session's rows from the log (GDPR erasure)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    CONSUMER_FLAGS.add_arguments(parser, only=("log_dir",))
    ERASE_FLAGS.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    command = ERASE_FLAGS.load(args)
    log_dir = log_storage(settings, CONSUMER_FLAGS.load(args))
    started = time.monotonic()
    given = [(k, v) for k, v in (("user", command.user), ("request", command.request_id),
                                 ("session", command.session_id)) if v is not None]  # fmt: skip
    if len(given) != 1:
        raise ErasureError("user", "give exactly one of --user, --request-id, --session-id")
    kind, value = given[0]
    request = erasure_request(kind, value, command.requested_by)
    offset = publish_erasure(settings, request)
    found = ErasureReport(erased_request_ids(log_dir, [request]))
    write_status(log_dir, [request], found, status="in_progress")  # running consumers learn the request ids
    marked_ms = int(time.time() * 1000)
    report = erase_from_log(log_dir, [request], reader_grace_s=command.reader_grace_s)
    deadline = time.monotonic() + command.consumer_wait_s
    while lagging := lagging_consumers(log_dir, offset + 1, since_ms=marked_ms):
        if time.monotonic() > deadline:
            raise ErasureError("consumer_wait_s", f"consumers {', '.join(lagging)} did not acknowledge erasure "
                               f"{request.erasure_id} in {command.consumer_wait_s:.0f} s; run `prefpair erase` again")
        time.sleep(0.2)
    again = erase_from_log(log_dir, [request], reader_grace_s=command.reader_grace_s)  # what they wrote meanwhile
    total = _merged(_merged(found, report), again)
    status = write_status(log_dir, [request], total)
    result: dict[str, Any] = {
        "erasure_id": request.erasure_id, "status": "complete", "status_file": str(status),
        "segments_rewritten": total.segments_rewritten, "rows_removed": total.rows_removed,
        "seconds": round(time.monotonic() - started, 3),
    }  # fmt: skip
    if command.datasets is not None:
        result["affected_versions"] = affected(Path(command.datasets), log_dir)
        result["rebuild"] = rebuild_command(Path(command.datasets))
    print(json.dumps(result, sort_keys=True))
    return 0


def affected(root: Path, log_dir: Any) -> list[str]:
    """Versions under a dataset root (or the dataset itself) whose inputs held erased rows."""
    manifests: dict[str, dict[str, Any]] = {}
    for manifest in sorted(root.glob(f"*/{MANIFEST}")) + sorted(root.glob(MANIFEST)):
        manifests[manifest.parent.name] = json.loads(manifest.read_text(encoding="utf-8"))
    return affected_versions(manifests, read_statuses(log_dir))


def rebuild_command(root: Path) -> str:
    """The one command that rebuilds a dataset from the erased log (with the options its manifest records).

    A plain dataset is replaced in place; an incremental root's versions are immutable, so a fresh
    root is compiled beside it (its first version holds every pair still in the log) to swap in.
    """
    if (root / MANIFEST).is_file():
        return f"prefpair compile --out {root}"
    return f"prefpair compile --incremental --out {root}.rebuilt"


def _merged(first: ErasureReport, second: ErasureReport) -> ErasureReport:
    merged = ErasureReport(first.request_ids | second.request_ids, first.segments_rewritten + second.segments_rewritten)
    for report in (first, second):
        for table, n in report.rows_removed.items():
            merged.rows_removed[table] = merged.rows_removed.get(table, 0) + n
        for partition, sides in report.removed_offsets.items():
            for side, offsets in sides.items():
                merged.removed_offsets.setdefault(partition, {}).setdefault(side, []).extend(offsets)
    return merged
