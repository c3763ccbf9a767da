"""What the service tests share: the app in uvicorn on a free loopback port, clients, topic reads."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr

from prefpair.config import Settings
from prefpair.schemas.wire import Codec, SingleObjectCodec
from prefpair.service.app import create_app
from prefpair.service.config import ServiceConfig, TokenSecret
from prefpair.service.server import uvicorn_options

API_KEY = "test-key-" + "k" * 24
CURRENT = TokenSecret(kid="v2", secret=SecretStr("current-secret-" + "c" * 20))
PREVIOUS = TokenSecret(kid="v1", secret=SecretStr("previous-secret-" + "p" * 20))
CONTINUOUS = {"type": "CONTINUOUS", "min": 0, "max": 1}
CATEGORICAL = {
    "type": "CATEGORICAL",
    "categories": [{"label": "good", "value": 1}, {"label": "bad", "value": 0}],
}


@dataclass
class Served:
    url: str
    settings: Settings
    config: ServiceConfig
    client: httpx.Client  # sends the API key
    public: httpx.Client  # no credentials: what a browser or an email client has


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve(settings: Settings, **overrides: Any) -> Iterator[Served]:
    """Run the app in uvicorn on a thread; shutting down runs the lifespan (producer flush)."""
    sock = free_socket()
    port = sock.getsockname()[1]
    values: dict[str, Any] = {
        "port": port,
        "api_keys": (SecretStr(API_KEY),),
        "token_secrets": (CURRENT, PREVIOUS),
        "public_base_url": f"http://127.0.0.1:{port}",
        "key_rate": 1000.0,
        "key_burst": 1000,
        "token_rate": 1000.0,
        "token_burst": 1000,
        "auth_failure_burst": 100_000,  # the refusal tests fail authentication on purpose, many times
        "ack_timeout": 20.0,
    }
    values.update(overrides)
    config = ServiceConfig(**values)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, config), log_level="warning", **uvicorn_options(config))
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    with (
        httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=30) as client,
        httpx.Client(base_url=url, timeout=30) as public,
    ):
        try:
            yield Served(url, settings, config, client, public)
        finally:
            server.should_exit = True
            thread.join(30)
            sock.close()
    assert not thread.is_alive(), "uvicorn did not shut down"


def topic_messages(settings: Settings) -> list[tuple[bytes | None, bytes]]:
    """Every (key, value) on the feedback topic (reads to the end of each partition)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        metadata = consumer.list_topics(settings.feedback_topic, timeout=10)
        partitions = list(metadata.topics[settings.feedback_topic].partitions)
        consumer.assign([TopicPartition(settings.feedback_topic, p, 0) for p in partitions])
        done: set[int] = set()
        messages: list[tuple[bytes | None, bytes]] = []
        deadline = time.monotonic() + 30  # a guard against hanging, not a timed assertion
        while len(done) < len(partitions) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                done.add(message.partition())
                continue
            messages.append((message.key(), message.value()))
        assert len(done) == len(partitions), "did not reach the end of the feedback topic"
        return messages
    finally:
        consumer.close()


def topic_events(settings: Settings, codec: Codec | None = None) -> list[dict[str, Any]]:
    """Every event on the feedback topic, decoded; each message's key is checked to be its request id."""
    codec = codec or SingleObjectCodec()
    events = []
    for key, value in topic_messages(settings):
        event = codec.decode(value)[1]
        assert key == event["request_id"].encode(), (key, event["request_id"])
        events.append(event)
    return events


def events_of(settings: Settings, feedback_id: str) -> list[dict[str, Any]]:
    return [e for e in topic_events(settings) if e["feedback_id"] == feedback_id]


def refused(response: httpx.Response, status: int, *needles: str) -> dict[str, Any]:
    """Assert a refusal: the status, and a message that names the problem."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    for needle in needles:
        assert needle in body["message"], body
    return body


def nested(depth: int, leaf: str = '"x"', opener: str = '{"a":', closer: str = "}") -> str:
    """JSON text of ``leaf`` inside ``depth`` objects (``opener="[", closer="]"``: arrays), written
    as text because encoding a deep value recurses."""
    return opener * depth + leaf + closer * depth


def json_text(template: Any, **raw: str) -> str:
    """``template`` as JSON text, each string ``"@NAME"`` in it replaced by the JSON text ``raw[NAME]``."""
    text = json.dumps(template)
    for name, value in raw.items():
        text = text.replace(json.dumps(f"@{name}"), value)
    return text


def send_json(client: httpx.Client, method: str, url: str, body: str | bytes) -> httpx.Response:
    """Send ``body`` as it is, as ``application/json``."""
    content = body.encode("utf-8") if isinstance(body, str) else body
    return client.request(method, url, content=content, headers={"Content-Type": "application/json"})
