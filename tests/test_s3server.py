"""The local S3 server of :mod:`prefpair.s3server` (what the tests' fixtures and the benchmarks start)."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from prefpair.errors import StorageError
from prefpair.s3server import S3Endpoint, seaweed_s3


def refuses_connections(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as sock:
        return sock.connect_ex((parts.hostname or "", parts.port or 0)) != 0


def test_a_server_answers_on_loopback_with_its_own_credentials_and_is_gone_after_the_block(tmp_path: Path) -> None:
    with seaweed_s3(tmp_path / "s3", bucket="bench") as endpoint:
        assert urlsplit(endpoint.url).hostname == "127.0.0.1" and endpoint.bucket == "bench"
        (endpoint.root("a") / "b.txt").write_text("hello")
        assert (endpoint.root("a") / "b.txt").read_text() == "hello"
        stranger = S3Endpoint(endpoint.url, endpoint.access_key_id, "not-the-secret", endpoint.bucket)
        with pytest.raises(StorageError):
            (stranger.root("a") / "b.txt").read_text()
        assert not refuses_connections(endpoint.url)
    assert refuses_connections(endpoint.url)

