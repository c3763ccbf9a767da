"""An OpenAI-compatible chat-completions API as an evaluator (``--endpoint``, ``--judge-model``).

Each question becomes one ``POST <endpoint>/chat/completions`` with a system and a user message
rendered from a prompt template (``string.Template``: ``$prompt``, ``$response_a``, ...; a line
``---`` splits the system message from the user message), ``temperature`` and, by default,
``response_format: {"type": "json_object"}``. The answer is the first choice's message content;
``usage`` gives the tokens counted per run.

HTTP 429, 5xx, timeouts and lost connections are retried with exponential backoff and jitter
(a ``Retry-After`` header wins), up to ``max_retries``; any other 4xx, or an answer that is not a
chat completion, fails at once (:class:`~prefpair.judge.exceptions.EndpointError`). Uses the
standard library's ``urllib`` (the judge needs one POST per question; no dependency added).
"""

from __future__ import annotations

import http.client
import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from string import Template
from typing import Any

from prefpair.judge.config import JudgeConfig, JudgeKind
from prefpair.judge.evaluators import RateLimiter
from prefpair.judge.exceptions import EndpointError, JudgeConfigError
from prefpair.judge.questions import Question, Reply

SPLIT = "\n---\n"
BODY_SHOWN = 300
PLACEHOLDERS = ("prompt", "system_prompt", "response_a", "response_b", "response", "responses", "labels", "key",
                "min", "max", "n")  # fmt: skip

_JUDGE = "You are an impartial judge of answers an assistant gave to a user."
_NEUTRAL = "Do not let the order in which answers are shown, their length or their style sway you."
DEFAULT_TEMPLATES: dict[str, str] = {
    "pairwise": f"""{_JUDGE} Compare two answers to the same request on "$key" and say which one is better.
{_NEUTRAL}
Reply with a JSON object only: {{"winner": "A" or "B" or "tie" or "both_bad", "reason": "<one sentence>"}}.
---
[System prompt]
$system_prompt

[User request]
$prompt

[Answer A]
$response_a

[Answer B]
$response_b
""",
    "score": f"""{_JUDGE} Rate one answer on "$key" from $min (worst) to $max (best).
Reply with a JSON object only: {{"score": <a number from $min to $max>, "reason": "<one sentence>"}}.
---
[System prompt]
$system_prompt

[User request]
$prompt

[Answer]
$response
""",
    "ranking": f"""{_JUDGE} Rank the $n answers to the same request on "$key", best first.
{_NEUTRAL}
Reply with a JSON object only: {{"ranking": [the labels $labels, best first, each once], "reason": "<one sentence>"}}.
---
[System prompt]
$system_prompt

[User request]
$prompt

$responses
""",
}


def load_template(path: Path | None, kind: JudgeKind) -> str:
    """The template text (a file's, or the kind's built-in one), checked for unknown placeholders."""
    if path is None:
        return DEFAULT_TEMPLATES[kind]
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise JudgeConfigError("prompt_template", f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        Template(text).substitute({name: "" for name in PLACEHOLDERS})
    except KeyError as exc:
        raise JudgeConfigError(
            "prompt_template", f"{path}: unknown placeholder ${exc.args[0]}; known: "
            f"{', '.join('$' + p for p in PLACEHOLDERS)}",
        ) from None  # fmt: skip
    except ValueError as exc:
        raise JudgeConfigError("prompt_template", f"{path}: {exc} (write $$ for a dollar sign)") from None
    return text


def render(template: str, question: Question) -> list[dict[str, str]]:
    """The chat messages of one question: system (before a ``---`` line, if any) and user."""
    low, high = question.score_range
    labels = question.labels
    texts = [r.text for r in question.responses]
    values = {
        "prompt": question.prompt,
        "system_prompt": question.system_prompt or "(none)",
        "response_a": texts[0],
        "response_b": texts[1] if len(texts) > 1 else "",
        "response": texts[0],
        "responses": "\n\n".join(f"[Answer {label}]\n{text}" for label, text in zip(labels, texts, strict=True)),
        "labels": ", ".join(labels),
        "key": question.key,
        "min": f"{low:g}",
        "max": f"{high:g}",
        "n": str(len(texts)),
    }
    filled = Template(template).substitute(values)
    system, sep, user = filled.partition(SPLIT)
    if not sep:
        return [{"role": "user", "content": filled.strip()}]
    return [{"role": "system", "content": system.strip()}, {"role": "user", "content": user.strip()}]


class _Retryable(Exception):
    def __init__(self, reason: str, status: int | None = None, after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.after = after


class HttpEvaluator:
    """Asks an OpenAI-compatible ``/chat/completions`` endpoint; thread-safe (one connection per call)."""

    def __init__(self, config: JudgeConfig, template: str, limiter: RateLimiter | None = None) -> None:
        assert config.endpoint is not None and config.judge_model is not None
        self.url = config.endpoint.rstrip("/") + "/chat/completions"
        self.model: str | None = config.judge_model
        self.template = template
        self.temperature = config.temperature
        self.json_mode = config.json_mode
        self.api_key = config.api_key.get_secret_value() if config.api_key is not None else None
        self.timeout = config.timeout_s
        self.max_retries = config.max_retries
        self.backoff = config.backoff_s
        self.limiter = limiter or RateLimiter(None)

    def body(self, question: Question) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": render(self.template, question),
            "temperature": self.temperature,
        }
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    def ask(self, question: Question) -> Reply:
        payload = json.dumps(self.body(question)).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.max_retries + 1):
            self.limiter.wait()
            try:
                completion = self._post(payload, headers)
            except _Retryable as exc:
                if attempt == self.max_retries:
                    raise EndpointError(self.url, f"gave up: {exc.reason}", status=exc.status,
                                        attempts=attempt + 1) from None  # fmt: skip
                delay = exc.after if exc.after is not None else self.backoff * 2**attempt * random.uniform(0.5, 1.0)
                time.sleep(delay)
                continue
            return self._reply(completion, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _post(self, payload: bytes, headers: Mapping[str, str]) -> Any:
        request = urllib.request.Request(self.url, data=payload, headers=dict(headers), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace")[:BODY_SHOWN]
            if exc.code == 429 or exc.code >= 500:
                after = _retry_after(exc.headers.get("Retry-After"))
                raise _Retryable(f"HTTP {exc.code}: {body}", exc.code, after) from None
            raise EndpointError(self.url, body or exc.reason, status=exc.code) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:  # fmt: skip
            reason = getattr(exc, "reason", None) or exc
            raise _Retryable(f"{type(exc).__name__}: {reason}") from None
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            shown = raw[:BODY_SHOWN].decode("utf-8", "replace")
            raise EndpointError(self.url, f"the response is not JSON: {shown!r}", status=200) from None

    def _reply(self, completion: Any, retries: int) -> Reply:
        try:
            content = completion["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            shown = json.dumps(completion)[:BODY_SHOWN]
            raise EndpointError(self.url, f"not a chat completion (no choices[0].message.content): {shown}",
                                status=200) from None  # fmt: skip
        if not isinstance(content, str):
            content = "" if content is None else json.dumps(content)
        usage = completion.get("usage") if isinstance(completion, dict) else None
        usage = usage if isinstance(usage, dict) else {}
        return Reply(
            answer=content,
            raw=content,
            prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=_count(usage.get("completion_tokens")),
            retries=retries,
            model=completion.get("model") if isinstance(completion.get("model"), str) else None,
        )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _retry_after(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header (its HTTP-date form is ignored: backoff applies)."""
    try:
        return min(60.0, max(0.0, float(value))) if value else None
    except ValueError:
        return None
