"""The benchmark's events: a ~1 KB prompt and two ~1 KB candidates, as the issue asks."""

from __future__ import annotations

import random
import uuid
from typing import Any

WORDS = (
    "model", "prompt", "answer", "latency", "gradient", "token", "feedback", "dataset", "kafka",
    "parquet", "summary", "argument", "federated", "privacy", "quality", "reward", "policy", "user",
)


def text(rng: random.Random, size: int) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:size]


def inference_kwargs(rng: random.Random, index: int) -> dict[str, Any]:
    """Arguments of ``log_inference`` for one realistic request."""
    return {
        "request_id": f"bench-{index:08d}-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}",
        "prompt": text(rng, 1000),
        "candidates": [
            {"candidate_id": cid, "text": text(rng, 1000), "model_name": "chat-large",
             "model_version": "2026-11", "model_checkpoint": "ckpt-0042", "temperature": 0.7,
             "top_p": 0.95, "max_tokens": 512}
            for cid in ("a", "b")
        ],
        "presentation_order": ["a", "b"],
        "user_id": f"user-{index % 997}",
        "session_id": f"sess-{index % 4001}",
        "environment": "production",
        "metadata": {f"k{i}": f"value-{i}" for i in range(5)},
    }
