"""Where a compile writes, safely: a lock per output, a staging dir beside it, an atomic rename.

Layout of one dataset directory::

    <dataset>/README.md                  dataset card (Hugging Face format: YAML configs per format)
    <dataset>/manifest.json              inputs and watermarks, config, counts, file hashes
    <dataset>/<format>/<split>.jsonl     one JSON object a line
    <dataset>/openai/<split>.meta.jsonl  the optional columns of openai lines ({"line": n, ...}; n from 1)
    <dataset>/.emitted.parquet           ids of what this dataset holds (incremental bookkeeping)

Without ``--incremental`` the output directory *is* the dataset, replaced whole on each run.
With it, the output directory holds versions ``v00001``, ``v00002``, ...: each a dataset of the
pairs that no earlier version holds; ``.compile-state.json`` beside them summarises the runs.
A version is committed by its rename, and the set of emitted ids is read back from the
committed versions, so a crash at any point neither loses nor repeats a pair.

On object storage (``--out s3://bucket/prefix``), which has no rename, a compile is *published*::

    <out>/data/<n>-<attempt>/...     the dataset, laid out as above (staged locally, then uploaded)
    <out>/published/<n>.json         the pointer to it, written last (n: 00000001, 00000002, ...)

The pointer is created with a conditional PUT (``If-None-Match: *``): of two compiles that publish
the same number, the second loses (:class:`~prefpair.compile.exceptions.PublishConflictError`) and
removes its files, which it wrote under its own attempt id, so the winner's are never touched.
Readers take the pointer with the highest number (:func:`published`) and read the dataset it
names: the previous dataset or the new one, never a part of one, and nothing before the first.
Without ``--incremental`` the newest pointer is the dataset and older datasets are deleted except
the one before it (readers that resolved it a moment earlier can finish); with it, publication
``n`` is version ``v<n>`` and every published version is kept. Pointers are never deleted, so a
number is never reused. Files of attempts that lost or crashed are removed by the next compile.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefpair.compile.exceptions import OutputDirError, OutputLockedError, PublishConflictError
from prefpair.dataset_layout import MANIFEST, PUBLISHED
from prefpair.durable import fsync_path, write_text_atomic
from prefpair.storage import Storage

CARD = "README.md"
EMITTED = ".emitted.parquet"
STATE = ".compile-state.json"
VERSION_DIR = re.compile(r"^v(\d{5,})$")
STAGING_PREFIX = ".tmp-compile-"


def lock_path(out_dir: Path) -> Path:
    """The lock file of an output: beside it, so it survives the output being replaced."""
    return out_dir.parent / f".{out_dir.name}.lock"


@contextlib.contextmanager
def output_lock(out_dir: Path) -> Iterator[Path]:
    """Hold an exclusive, non-blocking ``flock`` on the output's lock file (OutputLockedError if taken)."""
    path = lock_path(out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputLockedError(path) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def staging_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh hidden directory ``<parent>/<prefix><random>``; removed if it was not renamed away."""
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f"{prefix}{uuid.uuid4().hex[:12]}"
    path.mkdir()
    try:
        yield path
    finally:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)


def sweep_staging(parent: Path, prefix: str) -> None:
    """Remove staging dirs of this output that crashed runs left (we hold its lock: none is live)."""
    if parent.is_dir():
        for child in parent.iterdir():
            if child.name.startswith(prefix) and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)


def check_replaceable(out_dir: Path) -> None:
    """A non-incremental output may replace only a dataset of ours (or nothing, or an empty dir)."""
    if out_dir.is_symlink() or out_dir.is_file():
        raise OutputDirError(out_dir, "exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        if versions(out_dir):
            raise OutputDirError(out_dir, "holds incremental versions; compile into it with --incremental")
        raise OutputDirError(out_dir, "exists, is not empty and is not a prefpair dataset (no manifest.json)")


def check_incremental_root(out_dir: Path) -> None:
    if (out_dir / MANIFEST).is_file():
        raise OutputDirError(out_dir, "holds a non-incremental dataset; use another output for --incremental")
    if out_dir.is_file():
        raise OutputDirError(out_dir, "exists and is not a directory")


def replace_dir(staged: Path, out_dir: Path, prefix: str) -> None:
    """Put ``staged`` in place of ``out_dir``: two renames (the old one aside, the new one in), fsynced.

    Readers see the old dataset or the new one, except between the two renames where the
    path is briefly missing; a crash there leaves the old one under ``prefix`` (swept next run)
    and the new one staged.
    """
    parent = out_dir.parent
    old = parent / f"{prefix}old-{uuid.uuid4().hex[:12]}"
    if out_dir.exists():
        os.rename(out_dir, old)
    os.rename(staged, out_dir)
    fsync_path(parent)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def versions(root: Path) -> list[Path]:
    """Committed incremental versions, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), child) for child in root.iterdir() if (m := VERSION_DIR.match(child.name))]
    return [path for _, path in sorted(found) if (path / MANIFEST).is_file()]


def next_version(root: Path) -> str:
    existing = versions(root)
    number = int(VERSION_DIR.match(existing[-1].name).group(1)) + 1 if existing else 1  # type: ignore[union-attr]
    return f"v{number:05d}"


def fsync_tree(root: Path) -> None:
    """Make every file of a staged dataset durable before it is renamed into place."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(Path(dirpath) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_path(Path(dirpath))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def stable_json(data: Any) -> str:
    """Stable JSON (sorted keys, fixed indent, trailing newline): same data, same bytes."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json(path: Path, data: Any) -> None:
    path.write_text(stable_json(data), encoding="utf-8")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, stable_json(data))


# --------------------------------------------------------------------------- object storage: publish by pointer
DATA = "data"
POINTER = re.compile(r"^(\d{8,})\.json$")
DATA_DIR = re.compile(r"^(\d{8,})-[0-9a-f]+$")
KEEP_REPLACED = 2
"""Datasets kept under a non-incremental output on object storage: the current one and the one before."""


@dataclass(frozen=True)
class Publication:
    """One published compile of an output on object storage (the content of its pointer)."""

    number: int
    path: str
    """The dataset's folder, relative to the output (``data/<n>-<attempt>``)."""
    incremental: bool
    version: str | None
    """``v<n>`` for an incremental output, else None."""
    manifest_sha256: str
    summary: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "path": self.path,
            "incremental": self.incremental,
            "version": self.version,
            "manifest_sha256": self.manifest_sha256,
            "summary": self.summary,
        }

    @classmethod
    def read(cls, out: Storage, number: int) -> Publication:
        pointer = out / f"{PUBLISHED}/{number:08d}.json"
        try:
            data = json.loads(pointer.read_text())
            return cls(
                number=int(data["number"]),
                path=str(data["path"]),
                incremental=bool(data["incremental"]),
                version=data["version"],
                manifest_sha256=str(data["manifest_sha256"]),
                summary=dict(data["summary"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise OutputDirError(pointer.url, f"is not a prefpair publication pointer ({exc})") from None


def publication_numbers(out: Storage) -> list[int]:
    """Numbers of the published pointers of an output, ascending."""
    return sorted(int(m.group(1)) for key in (out / PUBLISHED).list_files() if (m := POINTER.match(key)))


def published(out: Storage, last: int | None = None) -> list[Publication]:
    """The publications of an output (the ``last`` ones, or all), oldest first; without
    ``--incremental`` only the newest counts."""
    numbers = publication_numbers(out)
    return [Publication.read(out, number) for number in (numbers[-last:] if last else numbers)]


def latest_publication(out: Storage) -> Publication | None:
    """The current dataset of an output on object storage: its newest publication, if any."""
    numbers = publication_numbers(out)
    return Publication.read(out, numbers[-1]) if numbers else None


def check_publishable(out: Storage, incremental: bool, latest: Publication | None) -> None:
    """Refuse an output of the other mode, or a prefix that holds something else than our datasets."""
    if latest is None:
        foreign = [name for name in out.list_names() if name not in (PUBLISHED, DATA)]
        if foreign:
            raise OutputDirError(out.url, f"is not empty and is not a prefpair dataset (holds {foreign[0]})")
        return
    if latest.incremental and not incremental:
        raise OutputDirError(out.url, "holds incremental versions; compile into it with --incremental")
    if incremental and not latest.incremental:
        raise OutputDirError(out.url, "holds a non-incremental dataset; use another output for --incremental")


def publish(
    out: Storage, stage: Path, number: int, *, incremental: bool, summary: dict[str, Any]
) -> Publication:
    """Upload the staged dataset under a fresh attempt folder, then create pointer ``number`` last.

    Loses (PublishConflictError, its files removed) when another compile created that pointer first.
    """
    folder = f"{DATA}/{number:08d}-{uuid.uuid4().hex[:12]}"
    target = out / folder
    publication = Publication(
        number=number,
        path=folder,
        incremental=incremental,
        version=f"v{number:05d}" if incremental else None,
        manifest_sha256=sha256_file(stage / MANIFEST),
        summary=summary,
    )
    try:
        target.upload_tree(stage)
        (out / f"{PUBLISHED}/{number:08d}.json").write_text(stable_json(publication.to_json()), exclusive=True)
    except FileExistsError:
        target.delete()
        raise PublishConflictError(out.url, number) from None
    except BaseException:
        target.delete()
        raise
    return publication


def sweep_published(out: Storage, kept: list[Publication]) -> None:
    """Remove dataset folders no kept publication names, up to the newest number (later ones may
    be compiles still uploading); ``kept``: every publication (incremental) or the last few."""
    if not kept:
        return
    newest = max(publication.number for publication in kept)
    names = {publication.path.rsplit("/", 1)[-1] for publication in kept}
    for name in (out / DATA).list_names():
        match = DATA_DIR.match(name)
        if match and int(match.group(1)) <= newest and name not in names:
            (out / f"{DATA}/{name}").delete()
