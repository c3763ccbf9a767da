"""Where the log, the datasets and the report live: a local folder, or S3-compatible object storage.

One interface, :class:`Storage`, two kinds:

- :class:`LocalStorage`, a directory (the default, as before): writes go to a temp file beside the
  target, fsynced and renamed over it (:mod:`prefpair.durable`);
- :class:`S3Storage`, ``s3://bucket/prefix`` on AWS S3 or any S3-compatible server (SeaweedFS,
  MinIO, Ceph...), through s3fs, the fsspec file system for S3 (on aiobotocore). One ``PUT``
  replaces an object whole, so a reader sees the old object or the new one; there is no rename,
  so what must appear as a group (a log segment, a dataset) is committed by one object written
  last, and a conditional ``PUT`` (``If-None-Match: *``) decides between two writers
  (``write_bytes(..., exclusive=True)`` raises FileExistsError for the loser).

:func:`location` turns a ``--log-dir`` / ``--out`` value into one of them. DuckDB reads S3 Parquet
through the same s3fs file system registered on its connection (:meth:`Storage.attach`); its own
httpfs extension is never needed.

Endpoint, region and credentials (:class:`S3Options`): prefpair's settings (``--s3-endpoint-url``,
``PREFPAIR_S3_*``) when given, else whatever botocore's standard chain finds (``AWS_ENDPOINT_URL_S3``,
``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``~/.aws``,
instance roles). The secret is a :class:`~pydantic.SecretStr`: never in a repr, a log line or an error.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, SecretStr

from prefpair.durable import fsync_path
from prefpair.errors import StorageError

if TYPE_CHECKING:
    import duckdb
    import s3fs

S3_SCHEME = "s3://"
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 120
MAX_ATTEMPTS = 4


class S3Options(BaseModel):
    """How to reach S3: None everywhere means botocore's own lookup (``AWS_*`` variables, ``~/.aws``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None

    def filesystem(self) -> s3fs.S3FileSystem:
        """The s3fs file system for these options (one per distinct options in a process)."""
        return _filesystem(self)


@functools.cache
def _filesystem(options: S3Options) -> s3fs.S3FileSystem:
    import s3fs

    kwargs: dict[str, Any] = {
        # Readers must see what was committed a moment ago: no cached listings.
        "use_listings_cache": False,
        "skip_instance_cache": True,
        "config_kwargs": {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "read_timeout": READ_TIMEOUT_S,
            "retries": {"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        },
    }
    if options.endpoint_url:
        kwargs["endpoint_url"] = options.endpoint_url
    if options.region:
        kwargs["client_kwargs"] = {"region_name": options.region}
    if options.access_key_id is not None and options.secret_access_key is not None:
        kwargs["key"] = options.access_key_id
        kwargs["secret"] = options.secret_access_key.get_secret_value()
    return s3fs.S3FileSystem(**kwargs)


def is_url(text: str | os.PathLike[str]) -> bool:
    """Whether a location names object storage (``s3://...``) rather than a local path."""
    return isinstance(text, str) and text.startswith(S3_SCHEME)


def check_location(text: str) -> str:
    """``text`` if it is a local path or a well-formed ``s3://bucket[/prefix]``; ValueError naming the problem."""
    if not text.strip():
        raise ValueError("empty location")
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    if scheme != "s3":
        raise ValueError(f"unsupported scheme {scheme}:// (a local path or s3://bucket/prefix)")
    bucket = rest.split("/", 1)[0]
    if not bucket:
        raise ValueError(f"no bucket in {text!r} (s3://bucket/prefix)")
    return text


Location = Annotated[str, AfterValidator(check_location)]
"""A config field holding a local path or an ``s3://bucket/prefix`` (turned into storage by :func:`location`)."""


def location(text: str | Path, options: S3Options | None = None) -> Storage:
    """A ``--log-dir`` / ``--out`` value as storage: ``s3://bucket/prefix`` or a local path."""
    if isinstance(text, Path):
        return LocalStorage(text)
    check_location(text)
    if is_url(text):
        bucket, _, key = text[len(S3_SCHEME) :].partition("/")
        return S3Storage(bucket, key, options or S3Options())
    return LocalStorage(Path(text))


class Storage(ABC):
    """A folder or a file in local or object storage. ``/ "a/b"`` names something below it.

    Folders exist implicitly on object storage (they are key prefixes): listing a folder nothing
    was written under gives nothing, for both kinds.
    """

    @property
    @abstractmethod
    def url(self) -> str:
        """The location as a user writes it: a path, or ``s3://bucket/key``."""

    @property
    @abstractmethod
    def name(self) -> str:
        """The last part of the location."""

    @property
    @abstractmethod
    def reader_path(self) -> str:
        """What DuckDB and pyarrow open (after :meth:`attach`): a local path or an ``s3://`` URL."""

    @abstractmethod
    def __truediv__(self, relative: str) -> Self: ...

    @abstractmethod
    def list_files(self) -> dict[str, int]:
        """Every file below this folder (recursive), as ``/``-separated relative paths -> sizes."""

    @abstractmethod
    def list_modified(self) -> dict[str, float]:
        """Every file below this folder (recursive), as relative paths -> last modified (Unix seconds):
        a file's mtime, an object's LastModified. What sweeps of abandoned writes go by."""

    @abstractmethod
    def list_names(self) -> list[str]:
        """Names of the files and folders right under this folder, sorted (a folder emptied a moment
        ago may still be listed: local directories stay, and some S3 servers remove them lazily)."""

    @abstractmethod
    def exists(self) -> bool:
        """Whether a file is here."""

    @abstractmethod
    def read_bytes(self) -> bytes:
        """The file here (FileNotFoundError if there is none)."""

    @abstractmethod
    def write_bytes(self, data: bytes, *, exclusive: bool = False) -> None:
        """Replace the file here with ``data`` all at once (readers see the old file or the new one).

        ``exclusive``: create it only if there is none; FileExistsError otherwise (a second writer loses).
        """

    @abstractmethod
    def upload(self, local: Path) -> None:
        """Copy a local file here, all at once."""

    @abstractmethod
    def download(self, local: Path) -> None:
        """Copy the file here to a local path."""

    @abstractmethod
    def delete(self) -> None:
        """Remove the file here, or the folder and everything below it (nothing there: nothing to do)."""

    @abstractmethod
    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        """Let DuckDB read :attr:`reader_path` of this storage on ``con``."""

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def write_text(self, text: str, *, exclusive: bool = False) -> None:
        self.write_bytes(text.encode("utf-8"), exclusive=exclusive)

    def upload_tree(self, local_dir: Path) -> list[str]:
        """Copy every file below ``local_dir`` here, same relative paths, in sorted order; returns them."""
        relatives = sorted(p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file())
        for relative in relatives:
            (self / relative).upload(local_dir / relative)
        return relatives

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and str(other) == str(self)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.url))


class LocalStorage(Storage):
    """A local directory (or a file in one)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def url(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def reader_path(self) -> str:
        return str(self.path)

    def __truediv__(self, relative: str) -> Self:
        return type(self)(self.path / relative)

    def list_files(self) -> dict[str, int]:
        if not self.path.is_dir():
            return {}
        found: dict[str, int] = {}
        for dirpath, _, filenames in os.walk(self.path):
            for filename in filenames:
                file = Path(dirpath) / filename
                found[file.relative_to(self.path).as_posix()] = file.stat().st_size
        return dict(sorted(found.items()))

    def list_modified(self) -> dict[str, float]:
        if not self.path.is_dir():
            return {}
        found: dict[str, float] = {}
        for dirpath, _, filenames in os.walk(self.path):
            for filename in filenames:
                file = Path(dirpath) / filename
                found[file.relative_to(self.path).as_posix()] = file.stat().st_mtime
        return dict(sorted(found.items()))

    def list_names(self) -> list[str]:
        return sorted(child.name for child in self.path.iterdir()) if self.path.is_dir() else []

    def exists(self) -> bool:
        return self.path.is_file()

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()

    def write_bytes(self, data: bytes, *, exclusive: bool = False) -> None:
        self._replace(lambda handle: handle.write(data), exclusive=exclusive)

    def upload(self, local: Path) -> None:
        with local.open("rb") as source:
            self._replace(lambda handle: shutil.copyfileobj(source, handle), exclusive=False)

    def download(self, local: Path) -> None:
        shutil.copyfile(self.path, local)

    def delete(self) -> None:
        if self.path.is_dir() and not self.path.is_symlink():
            shutil.rmtree(self.path)
        else:
            self.path.unlink(missing_ok=True)

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        """Nothing to do: DuckDB reads local files itself."""

    def _replace(self, fill: Any, *, exclusive: bool) -> None:
        """A temp file beside the target, filled and fsynced, then renamed over it (or linked: exclusive)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".tmp-{self.path.name}-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                fill(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp, 0o644)  # mkstemp makes it private
            if exclusive:
                os.link(temp, self.path)  # fails with FileExistsError when the target exists
                os.unlink(temp)
            else:
                os.replace(temp, self.path)
            fsync_path(self.path.parent)
        finally:
            Path(temp).unlink(missing_ok=True)


class S3Storage(Storage):
    """A key prefix (a folder) or a key (a file) in an S3 bucket."""

    def __init__(self, bucket: str, key: str, options: S3Options) -> None:
        self.bucket = bucket
        self.key = key.strip("/")
        self.options = options

    @property
    def url(self) -> str:
        return f"{S3_SCHEME}{self._path}"

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1] if self.key else self.bucket

    @property
    def reader_path(self) -> str:
        return self.url

    @property
    def _path(self) -> str:
        return f"{self.bucket}/{self.key}" if self.key else self.bucket

    def __truediv__(self, relative: str) -> Self:
        parts = [part for part in relative.split("/") if part]
        if any(part in (".", "..") for part in parts):
            raise ValueError(f"not a relative key: {relative!r}")
        return type(self)(self.bucket, "/".join([self.key, *parts]) if self.key else "/".join(parts), self.options)

    @property
    def fs(self) -> s3fs.S3FileSystem:
        return self.options.filesystem()

    def list_files(self) -> dict[str, int]:
        return {relative: int(info.get("size") or 0) for relative, info in self._find().items()}

    def _find(self) -> dict[str, dict[str, Any]]:
        """Every object below this prefix, relative key -> s3fs details, sorted by key."""
        folder = self._path + "/"
        try:
            found = self._call("list", lambda: self.fs.find(self._path, detail=True, withdirs=False))
        except FileNotFoundError as exc:  # a missing prefix lists empty: this is a missing bucket
            raise StorageError(self.url, f"cannot list it: {_reason(exc)}") from None
        return {
            name[len(folder) :]: info
            for name, info in sorted(found.items())
            if name.startswith(folder) and not name.endswith("/")
        }

    def list_modified(self) -> dict[str, float]:
        return {relative: _timestamp(info.get("LastModified")) for relative, info in self._find().items()}

    def list_names(self) -> list[str]:
        folder = self._path + "/"
        try:
            names = self._call("list", lambda: self.fs.ls(self._path, detail=False))
        except FileNotFoundError:
            return []
        return sorted({str(n)[len(folder) :].strip("/") for n in names if str(n).startswith(folder)} - {""})

    def exists(self) -> bool:
        try:
            return bool(self._call("check", lambda: self.fs.isfile(self._path)))
        except FileNotFoundError:
            return False

    def read_bytes(self) -> bytes:
        return bytes(self._call("read", lambda: self.fs.cat_file(self._path)))

    def read_many(self, files: list[S3Storage]) -> dict[str, bytes]:
        """Objects of this file system, fetched concurrently: bucket/key -> contents."""
        paths = [file._path for file in files]
        return dict(self._call("read", lambda: self.fs.cat(paths)))

    def write_bytes(self, data: bytes, *, exclusive: bool = False) -> None:
        mode = "create" if exclusive else "overwrite"
        self._call("write", lambda: self.fs.pipe_file(self._path, data, mode=mode))

    def upload(self, local: Path) -> None:
        self._call("upload to", lambda: self.fs.put_file(str(local), self._path))

    def download(self, local: Path) -> None:
        self._call("download", lambda: self.fs.get_file(self._path, str(local)))

    def delete(self) -> None:
        files = [f"{self._path}/{relative}" for relative in self.list_files()]
        if self.key and self.exists():
            files.append(self._path)
        if files:
            self._call("delete", lambda: self.fs.rm(files))

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        fs = self.fs
        if "s3" not in con.list_filesystems():
            con.register_filesystem(fs)

    def _call(self, action: str, call: Any) -> Any:
        """Run one s3fs call; its failures become a StorageError naming this URL (never a credential).

        FileNotFoundError passes through as it is; a failed conditional write (HTTP 412) becomes
        FileExistsError, as s3fs does for AWS (whose error names the condition; others may not).
        """
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except (FileNotFoundError, FileExistsError):
            raise
        except OSError as exc:
            if _status(exc.__cause__) == 412:
                raise FileExistsError(f"{self.url} exists (a conditional write lost)") from None
            raise StorageError(self.url, f"cannot {action} it: {_reason(exc)}") from None
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(self.url, f"cannot {action} it: {_reason(exc)}") from None


def read_all(files: Sequence[Storage]) -> list[bytes]:
    """The contents of ``files``, in order: objects on S3 fetched concurrently (s3fs batches the GETs),
    local files one by one. FileNotFoundError if one is missing."""
    found: dict[int, bytes] = {}
    by_options: dict[S3Options, list[tuple[int, S3Storage]]] = {}
    for index, file in enumerate(files):
        if isinstance(file, S3Storage):
            by_options.setdefault(file.options, []).append((index, file))
        else:
            found[index] = file.read_bytes()
    for group in by_options.values():
        contents = group[0][1].read_many([file for _, file in group])
        for index, file in group:
            found[index] = bytes(contents[file._path])
    return [found[index] for index in range(len(files))]


def _status(exc: BaseException | None) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _timestamp(value: Any) -> float:
    """An object's LastModified (a datetime from botocore, or a number) as Unix seconds; 0 if absent."""
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value or 0)


def _reason(exc: BaseException) -> str:
    """What the server or botocore said, in one line (error code first when there is one)."""
    cause = exc.__cause__ or exc
    response = getattr(cause, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        error = response["Error"]
        code, message = error.get("Code"), error.get("Message")
        if code or message:
            return ": ".join(str(part) for part in (code, message) if part)
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return " ".join(text.split()) or type(exc).__name__


__all__ = [
    "S3_SCHEME",
    "LocalStorage",
    "Location",
    "S3Options",
    "S3Storage",
    "Storage",
    "check_location",
    "is_url",
    "location",
    "read_all",
]
