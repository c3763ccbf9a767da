"""Feedback sent through presigned URLs ends up joined in the Parquet log and in a compiled dataset.

The whole path with nothing mocked: inference events on the real broker, ``prefpair serve`` in
uvicorn on a loopback port, presigned URLs used by a plain HTTP client (no API key), the consumer
daemon until it has caught up, the service's reads (HTTP and ``prefpair feedback``) over the log
it wrote, and the compiler.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from service_support import CONTINUOUS, serve

from prefpair.compile import CompileConfig, compile_dataset
from prefpair.config import Settings
from prefpair.consumers import ConsumerConfig, ConsumerDaemon
from prefpair.kafka import client_config, create_producer
from prefpair.schemas import InferenceEvent
from prefpair.schemas.registry import INFERENCE
from prefpair.schemas.wire import SingleObjectCodec

REQUESTS = 6


def inference(index: int) -> InferenceEvent:
    """A request with two candidates; ``a`` is the better answer."""
    topic = ["federated learning", "vector clocks", "B-trees", "Raft", "Bloom filters", "CRDTs"][index]
    return InferenceEvent.parse(
        {
            "event_id": f"inf-{index}",
            "request_id": f"req-e2e-{index}",
            "timestamp_ms": 1_793_491_200_000 + index,
            "prompt": f"Explain {topic} to a new engineer in three sentences.",
            "candidates": [
                {
                    "candidate_id": "a",
                    "text": f"A careful, correct explanation of {topic}, with an example and its trade-offs.",
                    "model_name": "chat-large",
                    "model_version": "2026-11",
                },
                {
                    "candidate_id": "b",
                    "text": f"{topic} is a thing computers use. It is good.",
                    "model_name": "chat-small",
                    "model_version": "2026-11",
                },
            ],
            "presentation_order": ["b", "a"],
            "user_id": f"user-{index}",
        }
    )


def log_inferences(settings: Settings, events: list[InferenceEvent]) -> None:
    codec = SingleObjectCodec()
    producer = create_producer(client_config(settings, enable_idempotence=True, acks="all"))
    for event in events:
        producer.produce(
            settings.inference_topic,
            key=event.request_id.encode(),
            value=codec.encode(INFERENCE, event.to_avro()),
        )
    assert producer.flush(30) == 0, "inference events were not acknowledged"


def test_presigned_feedback_is_joined_in_the_log_and_compiled(
    make_settings: Callable[..., Settings],
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    settings = make_settings(partitions=2)
    events = [inference(i) for i in range(REQUESTS)]
    log_inferences(settings, events)

    submitted: dict[str, dict[str, Any]] = {}
    with serve(settings) as served:
        for event in events:
            for candidate, score in (("a", 1), ("b", 0)):
                issued = served.client.post(
                    "/v1/feedback-tokens",
                    json={"run_id": event.request_id, "feedback_key": "thumbs", "feedback_config": CONTINUOUS},
                )
                assert issued.status_code == 201, issued.text
                url = issued.json()["url"]
                if candidate == "a":  # a link clicked in an email
                    answer = httpx.get(url, params={"score": score, "candidate_id": candidate}, timeout=30)
                else:  # a browser widget
                    answer = httpx.post(
                        url, json={"score": score, "candidate_id": candidate, "comment": "too vague"}, timeout=30
                    )
                assert answer.status_code == 202, answer.text
                submitted[answer.json()["id"]] = {"request_id": event.request_id, "candidate": candidate}

        stats = ConsumerDaemon(
            settings, ConsumerConfig(group_id="e2e-service", grace_ms=60_000, flush_interval_ms=100)
        ).run(until_caught_up=True)
        assert (stats.joined, stats.orphans, stats.dead_letters) == (2 * REQUESTS, 0, 0)

        # The service's own reads now see what the consumer wrote.
        some_id, some = next(iter(submitted.items()))
        shown = served.client.get(f"/v1/feedback/{some_id}")
        assert shown.status_code == 200, shown.text
        assert (shown.json()["request_id"], shown.json()["candidate_id"]) == (some["request_id"], some["candidate"])
        assert shown.json()["joined"] is True and shown.json()["source"]["type"] == "APP_USER"
        story = served.client.get(f"/v1/requests/{events[0].request_id}").json()
        assert story["inference"]["prompt"] == events[0].prompt
        assert sorted((f["candidate_id"], f["score"]) for f in story["feedback"]) == [("a", 1.0), ("b", 0.0)]
        pages: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"key": "thumbs", "limit": 5, **({"cursor": cursor} if cursor else {})}
            page = served.client.get("/v1/feedback", params=params).json()
            pages.extend(item["id"] for item in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(pages) == sorted(submitted)
        commented = served.client.get("/v1/feedback", params={"has_comment": True, "limit": 100}).json()
        assert {item["candidate_id"] for item in commented["items"]} == {"b"}

    listed = run_cli("feedback", "list", "--all", "--has-score", settings=settings)
    assert listed.returncode == 0, listed.stderr
    assert sorted(json.loads(line)["id"] for line in listed.stdout.splitlines()) == sorted(submitted)
    shown_cli = run_cli("feedback", "show", some_id, settings=settings)
    assert shown_cli.returncode == 0 and json.loads(shown_cli.stdout)["id"] == some_id

    out_dir = tmp_path / "dataset"
    result = compile_dataset(settings.log_dir, out_dir, CompileConfig(seed=0))
    assert sum(result.split_counts.values()) >= 1, result.split_counts
    assert result.files, "the compiler wrote no files"
    compiled = "".join(path.read_text(encoding="utf-8") for path in sorted(out_dir.rglob("*.jsonl")))
    included = [event for event in events if event.prompt and event.prompt in compiled]
    assert included, "no request of the presigned feedback reached the dataset"
    for event in included:  # with its better answer
        assert event.candidates[0].text and event.candidates[0].text in compiled, event.request_id
