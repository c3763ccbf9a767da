#!/usr/bin/env python
"""A tiny asyncio chat backend that logs what it shows and what the user picks.

``POST /chat {"prompt": ..., "user_id": ...}`` answers with two candidates (from two toy
"models"), shown in random order, and logs the inference. ``POST /feedback
{"request_id", "chosen", "rejected"}`` logs the user's pick, and ``{"request_id",
"candidate", "score"}`` a thumbs up (1) or down (0). Bad input answers 422 naming the field.

The log calls run directly on the event loop: they validate, encode and hand the event to
librdkafka in tens of microseconds and never wait for the broker. With
``queue_full="raise"`` a full local queue (the broker has been away for long) becomes a 503
instead of stalling the loop. Closing waits for delivery in a worker thread (``aclose``).

Standard library only (``asyncio.start_server`` and a minimal HTTP/1.1 reader), to keep the
logging in view; a real service would use its web framework.

    PREFPAIR_BOOTSTRAP_SERVERS=127.0.0.1:9092 python examples/async_web_handler.py --port 8080
    curl -s localhost:8080/chat -d '{"prompt": "What is Kafka?"}'
    curl -s localhost:8080/feedback -d '{"request_id": "...", "chosen": "large", "rejected": "small"}'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from typing import Any

from prefpair.config import Settings
from prefpair.errors import PrefpairError
from prefpair.producers import PreferenceLogger, QueueFullError
from prefpair.schemas import ValidationError

THUMBS = {"type": "CONTINUOUS", "min": 0, "max": 1}


def generate(prompt: str) -> list[dict[str, Any]]:
    """Two toy models answering the prompt (a real service calls its LLMs here)."""
    return [
        {"candidate_id": "small", "text": f"Short answer to: {prompt}", "model_name": "chat-small",
         "model_version": "2026-11", "temperature": 0.7, "latency_ms": 120.0},
        {"candidate_id": "large", "text": f"A longer, more careful answer to: {prompt}", "model_name": "chat-large",
         "model_version": "2026-11", "temperature": 0.7, "latency_ms": 480.0},
    ]  # fmt: skip


class App:
    """Routes requests to handlers that log through one shared PreferenceLogger."""

    def __init__(self, logger: PreferenceLogger) -> None:
        self.logger = logger

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        candidates = generate(str(body.get("prompt", "")))
        order = [c["candidate_id"] for c in candidates]
        random.shuffle(order)
        request_id = self.logger.log_inference(
            prompt=body.get("prompt"), candidates=candidates, presentation_order=order,
            user_id=body.get("user_id"), environment="example",
        )  # fmt: skip
        shown = {c["candidate_id"]: c["text"] for c in candidates}
        return {"request_id": request_id, "candidates": [{"candidate_id": c, "text": shown[c]} for c in order]}

    def feedback(self, body: dict[str, Any]) -> dict[str, Any]:
        request_id = str(body.get("request_id", ""))
        if "chosen" in body:
            feedback_id = self.logger.log_preference(
                request_id, chosen=body["chosen"], rejected=body.get("rejected", ""), source="app_user",
                comment=body.get("comment"),
            )  # fmt: skip
        else:
            feedback_id = self.logger.log_feedback(
                request_id, key="thumbs", score=body.get("score"), candidate=body.get("candidate"),
                comment=body.get("comment"), config=THUMBS, source="app_user",
            )  # fmt: skip
        return {"feedback_id": feedback_id}

    def handle(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        routes = {"/chat": self.chat, "/feedback": self.feedback}
        if method != "POST" or path not in routes:
            return 404, {"error": f"no route for {method} {path}"}
        try:
            return 200, routes[path](body)
        except ValidationError as exc:
            return 422, {"error": exc.reason, "field": exc.field}
        except QueueFullError as exc:
            return 503, {"error": str(exc)}


async def serve_one(app: App, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read one HTTP/1.1 request, answer it as JSON, close the connection."""
    try:
        method, path, _ = (await reader.readline()).decode("latin-1").split(" ", 2)
        headers = {}
        while (line := (await reader.readline()).decode("latin-1").strip()):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        body = json.loads(raw or b"{}")
        status, answer = app.handle(method, path, body if isinstance(body, dict) else {})
    except (ValueError, asyncio.IncompleteReadError) as exc:
        status, answer = 400, {"error": f"bad request: {exc}"}
    payload = json.dumps(answer).encode()
    writer.write(f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)  # fmt: skip
    await writer.drain()
    writer.close()


async def run(host: str, port: int, max_requests: int | None, settings: Settings) -> int:
    async with PreferenceLogger(settings, queue_full="raise") as logger:
        app = App(logger)
        handled = 0
        done = asyncio.Event()

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal handled
            await serve_one(app, reader, writer)
            handled += 1
            if max_requests is not None and handled >= max_requests:
                done.set()

        server = await asyncio.start_server(on_connection, host, port)
        bound = server.sockets[0].getsockname()
        print(f"listening on http://{bound[0]}:{bound[1]}", flush=True)
        async with server:
            await done.wait()
    report = await logger.aclose()  # already closed by the async with: the same report
    print(f"handled {handled} requests; {report.delivered} events delivered, {report.failed} failed", flush=True)
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed on start)")
    parser.add_argument("--max-requests", type=int, default=None, metavar="N", help="exit after N requests")
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (default: PREFPAIR_BOOTSTRAP_SERVERS)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.load({"bootstrap_servers": args.bootstrap_servers})
        return asyncio.run(run(args.host, args.port, args.max_requests, settings))
    except PrefpairError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
