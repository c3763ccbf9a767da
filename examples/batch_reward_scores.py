#!/usr/bin/env python
"""Score logged requests with a reward model, offline, and log each score as feedback.

A batch job reads requests (one JSON object a line: ``request_id``, ``prompt``, ``candidates``
with ``candidate_id`` and ``text``), scores every candidate, and logs each score with
``PreferenceLogger.log_feedback`` and a ``REWARD_MODEL`` source. All scores of one run share a
``run_id``, so the dataset compiler and the report can tell runs apart. ``--log-inference``
also logs the requests themselves, for candidates generated offline that serving code never
logged. Without a file it makes up a few requests.

The "reward model" here is a toy (it prefers answers of moderate length with varied words);
put yours in ``score``.

    PREFPAIR_BOOTSTRAP_SERVERS=127.0.0.1:9092 python examples/batch_reward_scores.py requests.jsonl
    python examples/batch_reward_scores.py --generate 5 --log-inference

Prints ``N requests, M scores delivered`` and exits 1 if any event was not delivered.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefpair.config import Settings
from prefpair.errors import PrefpairError
from prefpair.producers import PreferenceLogger

REWARD_MODEL = "toy-rm"
REWARD_MODEL_VERSION = "1"


def score(prompt: str | None, text: str) -> float:
    """A toy reward: varied words score higher, answers far from ~60 words score lower."""
    words = text.split()
    if not words:
        return -1.0
    variety = len(set(words)) / len(words)
    length_penalty = abs(len(words) - 60) / 60
    return round(variety - 0.5 * length_penalty, 4)


def read_requests(path: Path | None, generate: int) -> Iterator[dict[str, Any]]:
    """Requests from a JSONL file, or ``generate`` made-up ones."""
    if path is None:
        for i in range(generate):
            yield {
                "request_id": f"batch-{uuid.uuid4().hex[:12]}",
                "prompt": f"Explain idea number {i} in a few sentences.",
                "candidates": [
                    {"candidate_id": "short", "text": f"Idea {i} is simple.", "model_name": "chat-small"},
                    {"candidate_id": "long", "text": " ".join(f"word{j % (i + 7)}" for j in range(80)),
                     "model_name": "chat-large"},
                ],
            }  # fmt: skip
        return
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("requests", nargs="?", type=Path, help="JSONL file of requests (default: generate some)")
    parser.add_argument("--generate", type=int, default=3, metavar="N", help="requests to make up without a file")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="stop after N requests")
    parser.add_argument("--log-inference", action="store_true", help="also log each request as an inference")
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (default: PREFPAIR_BOOTSTRAP_SERVERS)")
    args = parser.parse_args(argv)

    run_id = f"rm-run-{uuid.uuid4().hex[:8]}"
    source = {"type": "REWARD_MODEL", "model": REWARD_MODEL, "model_version": REWARD_MODEL_VERSION,
              "run_id": run_id}  # fmt: skip
    requests = scores = 0
    try:
        settings = Settings.load({"bootstrap_servers": args.bootstrap_servers})
        with PreferenceLogger(settings) as logger:
            for request in read_requests(args.requests, args.generate):
                if args.limit is not None and requests >= args.limit:
                    break
                request_id = request["request_id"]
                if args.log_inference:
                    logger.log_inference(request_id=request_id, prompt=request.get("prompt"),
                                         candidates=request["candidates"])  # fmt: skip
                candidate_ids = [c["candidate_id"] for c in request["candidates"]]
                for candidate in request["candidates"]:
                    logger.log_feedback(
                        request_id, key="reward", score=score(request.get("prompt"), candidate.get("text") or ""),
                        candidate=candidate["candidate_id"], candidates=candidate_ids, source=source,
                    )  # fmt: skip
                    scores += 1
                requests += 1
        report = logger.close()  # the with block closed it already; this returns the same report
    except PrefpairError as exc:  # bad settings, bad input in the file...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{requests} requests, {scores} scores delivered" if report.ok else
          f"{requests} requests, {scores} scores; {report.failed} events failed, {report.pending} unresolved")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
