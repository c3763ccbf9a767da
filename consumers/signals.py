"""Implicit signals on the feedback topic: landed as rows of the segment's ``signals`` table.

A signal needs no join in the consumer: it lands in the segment of the feedback offsets it came
at (so it inherits the segments' exactly-once commit and resume), and compile joins it to its
inference, and to the inference's parent or child requests, across the whole log.
"""

from __future__ import annotations

from typing import Any

from prefpair.consumers.join import positioned_row
from prefpair.schemas.log import SIGNAL_RENAMES


def signal_row(record: dict[str, Any], topic: str, partition: int, offset: int) -> dict[str, Any]:
    """A decoded signal event as a row of the signals table."""
    return positioned_row(record, SIGNAL_RENAMES, "signal", topic, partition, offset)
