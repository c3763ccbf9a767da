"""How the feedback log resolves to the feedback in force: the one rule, as DuckDB SQL.

Every feedback event is a row of the log (:data:`prefpair.schemas.log.FEEDBACK_LOG`, or
``ORPHAN_LOG`` for feedback whose inference never came). Per ``feedback_id``, events are put in
log order: ``(feedback_timestamp_ms, feedback_partition, feedback_offset, feedback_event_id)``.
Then (LangSmith semantics):

- the feedback's life starts at its **latest CREATE**; nothing before it counts;
- each **UPDATE** after that CREATE replaces the fields it sets; a null field (an empty
  metadata map) keeps the earlier value, so an UPDATE cannot clear a field, and ``kind`` null
  keeps the earlier kind;
- a **DELETE** after the latest CREATE removes the feedback (later UPDATEs do not revive it;
  a new CREATE does);
- UPDATEs or DELETEs with no CREATE before them are not feedback in force.

Status per feedback id (what ``prefpair compile`` counts as drops):

- ``live``: it has a CREATE, and no DELETE after its latest CREATE;
- ``deleted``: a DELETE comes after its latest CREATE, or it has DELETEs but no CREATE;
- ``update_without_create``: only UPDATEs.

An event read twice (for instance both joined and orphaned) changes nothing: its copies are
equal and adjacent in log order. Callers that count events remove the copies first.

The functions return SQL text over a *source*: a table or view name, or a parenthesised
subquery with an alias, holding at least the columns ``feedback_event_id, feedback_id, op,
request_id, feedback_timestamp_ms, feedback_partition, feedback_offset`` and the fields merged.
Compile, the service's reads and the report all resolve through these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

LIVE = "live"
DELETED = "deleted"
UPDATE_WITHOUT_CREATE = "update_without_create"
STATUSES = (LIVE, DELETED, UPDATE_WITHOUT_CREATE)

LOG_ORDER = ("feedback_timestamp_ms", "feedback_partition", "feedback_offset", "feedback_event_id")
"""The order of a feedback id's events: event time, then position in the log."""

PATCHABLE = (
    "key",
    "kind",
    "outcome",
    "chosen_id",
    "rejected_id",
    "ranking",
    "candidate_id",
    "score",
    "value",
    "comment",
    "correction",
    "config",
    "source",
    "feedback_metadata",
    "experiment_id",
    "feedback_group_id",
)
"""The fields of a feedback that a CREATE sets and an UPDATE may replace."""

# A map is "set" when it holds something: the log stores an absent metadata map as {}.
_MAP_FIELDS = frozenset({"feedback_metadata"})


def ordered_events_sql(source: str) -> str:
    """The events of ``source`` with ``seq``: their place (1, 2, ...) in their feedback id's log order."""
    return (
        f"SELECT *, row_number() OVER (PARTITION BY feedback_id ORDER BY {', '.join(LOG_ORDER)}) AS seq FROM {source}"
    )


def feedback_status_sql(ordered: str, aggregates: Sequence[str] = ()) -> str:
    """One row per feedback id of ``ordered`` (rows of :func:`ordered_events_sql`):
    ``feedback_id, last_create, last_delete`` (``seq`` of the latest CREATE / DELETE, or NULL),
    ``status`` (one of :data:`STATUSES`) and any ``aggregates`` (``"expr AS name"`` over all events).
    """
    extra = "".join(f", {a}" for a in aggregates)
    return f"""
SELECT *, CASE WHEN last_create IS NOT NULL AND (last_delete IS NULL OR last_delete < last_create) THEN '{LIVE}'
               WHEN last_delete IS NOT NULL THEN '{DELETED}'
               ELSE '{UPDATE_WITHOUT_CREATE}' END AS status
FROM (
    SELECT feedback_id,
           max(seq) FILTER (WHERE op = 'CREATE') AS last_create,
           max(seq) FILTER (WHERE op = 'DELETE') AS last_delete{extra}
    FROM {ordered} GROUP BY feedback_id
)"""


def merged_feedback_sql(
    ordered: str, status: str, fields: Sequence[str] = PATCHABLE, aggregates: Sequence[str] = ()
) -> str:
    """The live feedback, one row per feedback id, from ``ordered`` events and their ``status``
    (rows of :func:`feedback_status_sql`).

    Columns: ``feedback_id``, ``request_id`` (its latest CREATE's), ``created_ms`` (the latest
    CREATE's event time), ``modified_ms`` (its latest event's time), ``events`` (events since the
    latest CREATE), each of ``fields`` merged (the latest set value), and ``aggregates``
    (``"expr AS name"`` over the live events, aliased ``o``, e.g. ``"bool_or(o.joined) AS joined"``).
    """
    unknown = sorted(set(fields) - set(PATCHABLE))
    if unknown:
        raise ValueError(f"not fields of a feedback: {', '.join(unknown)}")
    columns = [
        "arg_min(o.request_id, o.seq) AS request_id",
        "min(o.feedback_timestamp_ms) AS created_ms",
        "max(o.feedback_timestamp_ms) AS modified_ms",
        "count(*) AS events",
        *(f"arg_max(o.{f}, o.seq) FILTER (WHERE {_is_set(f)}) AS {f}" for f in fields),
        *aggregates,
    ]
    joined = ",\n       ".join(columns)
    return f"""
SELECT o.feedback_id,
       {joined}
FROM {ordered} o JOIN {status} s USING (feedback_id)
WHERE s.status = '{LIVE}' AND o.seq >= s.last_create
GROUP BY o.feedback_id"""


def resolved_feedback_sql(source: str, fields: Sequence[str] = PATCHABLE, aggregates: Sequence[str] = ()) -> str:
    """One query: the live, merged feedback of the events in ``source`` (columns as in
    :func:`merged_feedback_sql`)."""
    return f"""
WITH resolution_ordered AS MATERIALIZED ({ordered_events_sql(source)}),
resolution_status AS ({feedback_status_sql("resolution_ordered")})
{merged_feedback_sql("resolution_ordered", "resolution_status", fields, aggregates)}"""


def _is_set(field: str) -> str:
    return f"cardinality(o.{field}) > 0" if field in _MAP_FIELDS else f"o.{field} IS NOT NULL"
