"""Durability on a local file system: what every atomic write here (log segments, datasets,
reports) does before and after its rename."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a directory's entries (a rename is durable once its parent is), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
