"""A small OpenAI-compatible chat-completions server for the judge's tests (stdlib http.server in a thread).

Its verdicts follow a known rule, so the feedback a judge run writes can be predicted exactly:
the longer answer wins when the two differ by at least ``margin`` characters; otherwise the
server shows a planted position bias and picks whichever answer is shown first ("A"), which a
judge asked in both orders sees as a disagreement. It records every request it answers, can
answer 429 first to some requests, answer garbage to chosen prompts, fail for good after some
answers, or hold a request forever (so a test can kill the judge mid-run).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PAIRWISE = re.compile(
    r"\[User request\]\n(?P<prompt>.*?)\n\n\[Answer A\]\n(?P<a>.*?)\n\n\[Answer B\]\n(?P<b>.*)$", re.S
)
ANSWERS = re.compile(r"\[Answer ([A-Z])\]\n(.*?)(?=\n\n\[Answer [A-Z]\]\n|$)", re.S)
SINGLE = re.compile(r"\[Answer\]\n(?P<text>.*)$", re.S)
COMPLETION_TOKENS = 5


def score_of(text: str) -> float:
    """The score judge's rule: one point per 10 characters, from 1 to 10."""
    return float(min(10, max(1, len(text) // 10)))


def prompt_tokens(user_content: str) -> int:
    return len(user_content) // 4


@dataclass(frozen=True)
class Asked:
    """One answered request: the prompt and the two answers as shown (A first), and the verdict given."""

    prompt: str
    a: str
    b: str
    verdict: str
    body: dict[str, Any]


@dataclass
class Behaviour:
    margin: int = 10
    throttle_every: int = 0
    """Answer 429 (Retry-After: 0) to the first try of every n-th request (0: never)."""
    garbage: dict[str, str] = field(default_factory=dict)
    """Prompt -> the content answered instead of a verdict."""
    fail_after: int | None = None
    """After this many answers, every request gets HTTP 500."""
    hold_at: int | None = None
    """Once this many requests are answered, every further request is held (never answered)."""


class JudgeServer:
    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self.asked: list[Asked] = []
        self.throttled = 0
        self.failed = 0
        self.held = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._arrivals = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                status, payload, headers = server.answer(self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                                    **headers}.items():  # fmt: skip
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> JudgeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if path != "/v1/chat/completions":
            return 404, {"error": {"message": f"no route {path}"}}, {}
        user = body["messages"][-1]["content"]
        system = body["messages"][0]["content"]
        if "Rate one answer" in system or "Rank the" in system:
            return self.answer_score_or_ranking(body, user)
        match = PAIRWISE.search(user)
        if match is None:
            return 400, {"error": {"message": "not a pairwise question"}}, {}
        b = self.behaviour
        with self._lock:
            hold = b.hold_at is not None and len(self.asked) >= b.hold_at
        if hold:
            self.held.set()
            self._release.wait()
            return 503, {"error": {"message": "shutting down"}}, {}
        with self._lock:
            self._arrivals += 1
            arrival = self._arrivals
            if b.fail_after is not None and len(self.asked) >= b.fail_after:
                self.failed += 1
                return 500, {"error": {"message": "the judge model is down"}}, {}
            if b.throttle_every and arrival % b.throttle_every == 0:
                self.throttled += 1
                return 429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}
            prompt, a, text_b = match.group("prompt"), match.group("a"), match.group("b")
            if len(a) - len(text_b) >= b.margin:
                verdict = "A"
            elif len(text_b) - len(a) >= b.margin:
                verdict = "B"
            else:
                verdict = "A"  # the planted position bias: the first answer shown
            content = b.garbage.get(prompt, json.dumps({"winner": verdict, "reason": "by the rule"}))
            self.asked.append(Asked(prompt, a, text_b, verdict, body))
        return self.completion(body, user, content)

    def answer_score_or_ranking(self, body: dict[str, Any], user: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Score: :func:`score_of`; ranking: longest first (ties keep the order shown)."""
        single = SINGLE.search(user)
        if single is not None:
            content = json.dumps({"score": score_of(single.group("text")), "reason": "by length"})
        else:
            answers = ANSWERS.findall(user)
            ranked = sorted(answers, key=lambda item: -len(item[1]))
            content = json.dumps({"ranking": [label for label, _ in ranked]})
        with self._lock:
            self.asked.append(Asked(user, "", "", content, body))
        return self.completion(body, user, content)

    def completion(self, body: dict[str, Any], user: str, content: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        usage = {"prompt_tokens": prompt_tokens(user), "completion_tokens": COMPLETION_TOKENS}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return 200, {
            "id": f"chatcmpl-{len(self.asked)}",
            "object": "chat.completion",
            "model": f"{body.get('model')}-2026-11-01",  # a dated snapshot, as hosted APIs answer
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": usage,
        }, {}
