"""``prefpair serve`` over real HTTP (uvicorn on a free loopback port, httpx) against the real broker."""

from __future__ import annotations

import base64
import copy
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from service_support import (
    API_KEY,
    CATEGORICAL,
    CONTINUOUS,
    CURRENT,
    PREVIOUS,
    Served,
    events_of,
    free_socket,
    json_text,
    nested,
    refused,
    send_json,
    serve,
    topic_events,
    topic_messages,
)

from prefpair.config import Settings
from prefpair.schemas.wire import codec_for
from prefpair.service.app import key_fingerprint
from prefpair.service.config import TokenReuse, TokenSecret
from prefpair.service.jsonbody import MAX_JSON_DEPTH, TOO_DEEP, nesting_depth
from prefpair.service.tokens import TokenClaims, TokenSigner


@pytest.fixture
def service(make_settings: Callable[..., Settings]) -> Iterator[Served]:
    with serve(make_settings(partitions=2)) as served:
        yield served


# --------------------------------------------------------------------------- API-key writes
def test_create_is_acknowledged_and_idempotent(service: Served) -> None:
    body = {
        "id": "fb-1",
        "request_id": "req-1",
        "key": "rating",
        "score": 0.5,
        "comment": "ok",
        "candidate_id": "a",
        "feedback_config": CONTINUOUS,
        "metadata": {"ui": "web"},
    }
    first = service.client.post("/v1/feedback", json=body)
    assert first.status_code == 202, first.text
    accepted = first.json()
    assert accepted["id"] == "fb-1" and accepted["op"] == "CREATE"
    assert accepted["topic"] == service.settings.feedback_topic and accepted["offset"] is not None
    assert "Idempotent-Replayed" not in first.headers

    again = service.client.post("/v1/feedback", json=body)
    assert again.status_code == 202 and again.json() == accepted
    assert again.headers["Idempotent-Replayed"] == "true"
    refused(service.client.post("/v1/feedback", json={**body, "score": 0.9}), 409, "'fb-1'", "different body")

    langsmith = service.client.post("/v1/feedback", json={"run_id": "req-1", "key": "thumbs", "score": True})
    assert langsmith.status_code == 202, langsmith.text
    generated_id = langsmith.json()["id"]
    assert generated_id and langsmith.json()["request_id"] == "req-1"

    events = events_of(service.settings, "fb-1")
    assert len(events) == 1, events  # the repeat sent nothing
    event = events[0]
    assert (event["op"], event["request_id"], event["key"], event["kind"]) == (
        "CREATE",
        "req-1",
        "rating",
        "SCORE",
    )
    assert (event["score"], event["comment"], event["candidate_id"]) == (0.5, "ok", "a")
    assert event["source"]["type"] == "API" and event["source"]["source_id"] == key_fingerprint(API_KEY)
    assert API_KEY not in json.dumps(events)
    assert events_of(service.settings, generated_id)[0]["score"] == 1.0


def test_write_refusals_name_the_problem(service: Served) -> None:
    post = service.client.post
    base = {"request_id": "req-1", "key": "rating"}
    refused(service.public.post("/v1/feedback", json={**base, "score": 1}), 401, "missing X-API-Key")
    refused(
        post("/v1/feedback", json={**base, "score": 1}, headers={"X-API-Key": "wrong"}),
        401,
        "invalid API key",
    )
    body = refused(
        post("/v1/feedback", json={**base, "score": 7, "config": CONTINUOUS}), 422, "score", "above"
    )
    assert body["field"] == "score"
    refused(
        post("/v1/feedback", json={**base, "value": "meh", "config": CATEGORICAL}),
        422,
        "'meh' is not an allowed category (bad, good)",
    )
    refused(
        post(
            "/v1/feedback",
            json={**base, "kind": "PAIRWISE", "outcome": "PREFERRED", "chosen_id": "a", "rejected_id": "a"},
        ),
        422,
        "rejected_id",
        "equals chosen_id",
    )
    refused(post("/v1/feedback", json={**base}), 422, "score", "required")
    refused(post("/v1/feedback", json={"request_id": "req-1", "score": 1}), 422, "key", "Field required")
    refused(post("/v1/feedback", json={**base, "score": "high"}), 422, "score")
    refused(post("/v1/feedback", json={**base, "score": 1, "surprise": 1}), 422, "surprise")
    refused(
        post("/v1/feedback", content=b"{not json", headers={"Content-Type": "application/json"}), 422, "JSON"
    )

    limit = service.config.max_body_bytes
    big = {**base, "comment": "x" * (limit + 10)}
    refused(post("/v1/feedback", json=big), 413, f"larger than the limit of {limit} bytes")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield json.dumps(big).encode()

    refused(
        post("/v1/feedback", content=chunks(), headers={"Content-Type": "application/json"}), 413, "limit"
    )

    batch = [
        {**base, "id": "batch-ok", "score": 1},
        {**base, "id": "batch-bad", "score": 3, "config": CONTINUOUS},
    ]
    body = refused(post("/v1/feedback/batch", json={"feedback": batch}), 422, "feedback[1].score", "above")
    assert body["field"] == "feedback[1].score"
    assert topic_events(service.settings) == []  # nothing half-valid was sent, not even the good batch item


def test_batch_update_and_delete(service: Served) -> None:
    items = [{"id": f"b-{i}", "request_id": f"req-{i}", "key": "rating", "score": i / 2} for i in range(3)]
    response = service.client.post("/v1/feedback/batch", json={"feedback": items})
    assert response.status_code == 202, response.text
    accepted = response.json()["accepted"]
    assert [a["id"] for a in accepted] == ["b-0", "b-1", "b-2"]
    assert service.client.post("/v1/feedback/batch", json={"feedback": items}).json()["accepted"] == accepted

    patched = service.client.patch("/v1/feedback/b-1", json={"comment": "second look", "score": 1})
    assert patched.status_code == 202, patched.text
    assert (patched.json()["op"], patched.json()["request_id"]) == ("UPDATE", "req-1")
    deleted = service.client.delete("/v1/feedback/b-2")
    assert deleted.status_code == 202 and deleted.json()["op"] == "DELETE"
    explicit = service.client.delete("/v1/feedback/elsewhere", params={"request_id": "req-9"})
    assert explicit.status_code == 202 and explicit.json()["request_id"] == "req-9"
    refused(
        service.client.patch("/v1/feedback/nobody", json={"comment": "x"}), 404, "'nobody' is not in the log"
    )
    refused(service.client.patch("/v1/feedback/b-1", json={}), 422, "at least one field")
    # After its delete, an id may be created anew: not a replay of the deleted feedback.
    recreated = service.client.post("/v1/feedback", json=items[2])
    assert recreated.status_code == 202 and "Idempotent-Replayed" not in recreated.headers

    twice = [items[0], {**items[1], "id": "b-0"}]
    body = refused(service.client.post("/v1/feedback/batch", json={"feedback": twice}), 422, "repeats")
    assert body["field"] == "feedback[1].id"
    changed = [{**items[0], "id": "b-new"}, {**items[1], "score": 0.9}]
    body = refused(service.client.post("/v1/feedback/batch", json={"feedback": changed}), 409, "'b-1'")
    assert body["field"] == "feedback[1].id"

    ops = [(e["feedback_id"], e["op"]) for e in topic_events(service.settings)]
    assert sorted(ops) == sorted(
        [
            ("b-0", "CREATE"),
            ("b-1", "CREATE"),
            ("b-2", "CREATE"),
            ("b-1", "UPDATE"),
            ("b-2", "DELETE"),
            ("elsewhere", "DELETE"),
            ("b-2", "CREATE"),
        ]
    )  # the refused batches sent nothing, not even their good items
    update = next(e for e in topic_events(service.settings) if e["op"] == "UPDATE")
    assert (update["comment"], update["score"], update["key"]) == ("second look", 1.0, None)


# --------------------------------------------------------------------------- JSON bodies, alike everywhere
def json_writes(served: Served, token_url: str) -> dict[str, tuple[str, str, dict[str, Any], str]]:
    """Every write that takes a judgment as JSON: (method, url, body with "@v" for a value, field of "@v")."""
    return {
        "create": (
            "POST",
            "/v1/feedback",
            {"id": "j-create", "request_id": "req-j", "key": "k", "correction": "@v"},
            "correction",
        ),
        "batch": (
            "POST",
            "/v1/feedback/batch",
            {"feedback": [{"id": "j-batch", "request_id": "req-j", "key": "k", "correction": "@v"}]},
            "feedback.0.correction",
        ),
        "update": ("PATCH", "/v1/feedback/j-create", {"request_id": "req-j", "correction": "@v"}, "correction"),
        "token": ("POST", token_url, {"id": "j-token", "correction": "@v"}, "correction"),
    }


def test_json_nested_too_deep_is_refused_alike_on_every_endpoint(service: Served) -> None:
    """Depth 300 once passed validation and then failed serialization (500), 990 failed parsing (400),
    and PATCH took what POST refused: now one rule, a 422 naming the field, on every endpoint."""
    token = issue(service, reuse="expiry")
    token_url = token["url"]
    too_deep = {
        "objects, one level too many": nested(MAX_JSON_DEPTH + 1),
        "arrays inside an object": nested(1, nested(MAX_JSON_DEPTH, opener="[", closer="]")),
        "300 objects": nested(300),
        "990 objects": nested(990),
        "100,000 arrays": nested(100_000, opener="[", closer="]"),
    }
    for endpoint, (method, url, template, field) in json_writes(service, token_url).items():
        for name, value in too_deep.items():
            response = send_json(service.client, method, url, json_text(template, v=value))
            body = refused(response, 422, TOO_DEEP)
            assert body["error"] == "invalid_request", (endpoint, name, body)
            assert body["field"].startswith(field), (endpoint, name, body)
        deepest = send_json(service.client, method, url, json_text(template, v=nested(MAX_JSON_DEPTH)))
        assert deepest.status_code == 202, (endpoint, deepest.text)

    # Fields of a fixed shape are held to the same rule (and their shape).
    base = {"request_id": "req-j", "key": "k", "score": 1}
    for field in ("metadata", "score", "source", "ranking"):
        text = json_text({**base, field: "@v"}, v=nested(300))
        body = refused(send_json(service.client, "POST", "/v1/feedback", text), 422, TOO_DEEP)
        assert body["field"].startswith(field), body
    text = json_text({"request_id": "r", "feedback_key": "k", "config": "@v"}, v=nested(300))
    body = refused(send_json(service.client, "POST", "/v1/feedback-tokens", text), 422, TOO_DEEP)
    assert body["field"].startswith("config"), body

    # Only the four writes at the deepest allowed nesting were sent, each with its correction whole.
    events = topic_events(service.settings)
    assert sorted((e["feedback_id"], e["op"]) for e in events) == [
        ("j-batch", "CREATE"),
        ("j-create", "CREATE"),
        ("j-create", "UPDATE"),
        (f"tok-{token['id']}-j-token", "CREATE"),
    ]
    assert all(nesting_depth(json.loads(e["correction"])) == MAX_JSON_DEPTH for e in events)


def test_lone_surrogates_are_refused_in_keys_and_values_at_any_depth(service: Served) -> None:
    """A lone surrogate once reached Kafka as three U+FFFD (a metadata key got 202): now a 422 naming
    the field, wherever the string is: a key or a value, nested or not, escaped or as raw bytes."""
    token = issue(service, reuse="expiry")
    base = {"request_id": "req-u", "key": "k", "score": 1}
    escaped_key = "key '\\ud800' is not valid Unicode text"
    lone_key = '{"\\ud800": "v"}'  # JSON text: the escape, not the character
    cases: list[tuple[str, str, str | bytes, str, str]] = [  # method, url, body, field, message
        ("POST", "/v1/feedback", json_text({**base, "metadata": "@v"}, v=lone_key), "metadata", escaped_key),
        ("POST", "/v1/feedback", json_text({**base, "metadata": "@v"}, v='{"\\udfff": "v"}'), "metadata", "lone"),
        ("POST", "/v1/feedback", json_text({**base, "metadata": "@v"}, v='{"m": "\\ud800"}'), "metadata.m", "lone"),
        (
            "POST",
            "/v1/feedback",
            json_text({**base, "correction": "@v"}, v='{"a": [{"b\\udc00": 1}]}'),
            "correction.a.0",
            "key 'b\\udc00'",
        ),
        (
            "POST",
            "/v1/feedback",
            json_text({**base, "kind": "RANKING", "ranking": "@v"}, v='[["a"], ["\\ud800"]]'),
            "ranking.1.0",
            "lone",
        ),
        (
            "POST",
            "/v1/feedback",
            b'{"request_id": "req-u", "key": "k", "score": 1, "metadata": {"\xed\xa0\x80": "v"}}',
            "metadata",
            escaped_key,
        ),
        (
            "POST",
            "/v1/feedback/batch",
            json_text({"feedback": [base, {**base, "metadata": "@v"}]}, v=lone_key),
            "feedback.1.metadata",
            escaped_key,
        ),
        (
            "PATCH",
            "/v1/feedback/u-1",
            json_text({"request_id": "req-u", "metadata": "@v"}, v=lone_key),
            "metadata",
            escaped_key,
        ),
        ("POST", token["url"], json_text({"score": 1, "metadata": "@v"}, v=lone_key), "metadata", escaped_key),
        ("POST", "/v1/feedback-tokens", '{"request_id": "r", "feedback_key": "\\ud800"}', "feedback_key", "lone"),
    ]
    for method, url, body, field, message in cases:
        refusal = refused(send_json(service.client, method, url, body), 422, message)
        assert (refusal["error"], refusal["field"]) == ("invalid_request", field), refusal

    # A surrogate pair is a character like any other, and arrives whole.
    paired = json_text({**base, "id": "u-1", "metadata": "@v"}, v='{"\\ud83d\\ude00": "v"}')
    assert send_json(service.client, "POST", "/v1/feedback", paired).status_code == 202
    [event] = topic_events(service.settings)  # nothing refused was sent
    assert (event["feedback_id"], event["metadata"]) == ("u-1", {"\U0001f600": "v"})


def test_cursor_outside_the_logs_range_is_a_422(service: Served) -> None:
    """[10**40, "a"] once reached DuckDB (integer too large: 500); 1500 brackets made the decoder recurse."""
    for raw in (json.dumps([10**40, "a"]).encode(), b'[-1, "a"]', b'[1, "\\ud800"]', b"[" * 1500):
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        body = refused(service.client.get("/v1/feedback", params={"cursor": cursor}), 422, "cursor")
        assert (body["error"], body["field"]) == ("invalid_cursor", "cursor")


def test_paths_that_are_not_routes_are_json_404s_not_redirects(service: Served) -> None:
    """``POST /v1/feedback-tokens/`` (an empty token) once answered a 307 to the token-issuing route."""
    for method, path in (("POST", "/v1/feedback-tokens/"), ("GET", "/v1/feedback-tokens/"), ("GET", "/v1/feedback/")):
        response = service.public.request(method, path, json={"score": 1}, follow_redirects=False)
        assert response.status_code == 404 and "location" not in response.headers, (path, response.text)
        assert response.json()["error"] == "not_found"


# --------------------------------------------------------------------------- presigned URLs
def issue(served: Served, **body: Any) -> dict[str, Any]:
    response = served.client.post(
        "/v1/feedback-tokens", json={"request_id": "req-1", "feedback_key": "thumbs", **body}
    )
    assert response.status_code == 201, response.text
    issued: dict[str, Any] = response.json()
    return issued


def test_presigned_url_success_paths(service: Served) -> None:
    token = issue(service, feedback_config=CONTINUOUS, expires_in=600)
    assert token["url"] == f"{service.url}/v1/feedback-tokens/{token['token']}"
    assert token["reuse"] == "single" and token["expires_at"].endswith("Z")

    submitted = service.public.post(
        token["url"], json={"score": 1, "comment": "great", "correction": {"text": "x"}}
    )
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["id"] == f"tok-{token['id']}"
    again = service.public.post(
        token["url"], json={"score": 1, "comment": "great", "correction": {"text": "x"}}
    )
    assert again.json() == submitted.json() and again.headers["Idempotent-Replayed"] == "true"
    refused(service.public.post(token["url"], json={"score": 0}), 403, "already used")

    link = issue(service, reuse="expiry")["url"]
    clicked = service.public.get(link, params={"score": 1}, headers={"Accept": "text/html"})
    assert clicked.status_code == 202 and "Thank you" in clicked.text
    other = service.public.get(link, params={"score": 0, "comment": "changed my mind"})
    assert other.status_code == 202 and other.json()["request_id"] == "req-1"
    link_id = link.rsplit("/", 1)[1]
    link_token_id = TokenSigner((CURRENT,)).verify(link_id).token_id
    retried = [service.public.post(link, json={"id": "click-1", "score": 1}) for _ in range(2)]
    assert [r.status_code for r in retried] == [202, 202]
    assert retried[0].json() == retried[1].json()  # a client retry with its own id is not doubled
    assert retried[0].json()["id"] == f"tok-{link_token_id}-click-1"  # ids stay under the token

    legacy = TokenSigner((PREVIOUS,))  # a token signed before the secret was rotated still works
    old_token, _ = legacy.issue("req-2", "thumbs", 600, TokenReuse.SINGLE)
    assert service.public.post(f"/v1/feedback-tokens/{old_token}", json={"score": 1}).status_code == 202

    events = {e["feedback_id"]: e for e in topic_events(service.settings)}
    event = events[f"tok-{token['id']}"]
    assert (event["key"], event["request_id"], event["score"], event["comment"]) == (
        "thumbs",
        "req-1",
        1.0,
        "great",
    )
    assert event["correction"] == '{"text":"x"}'
    assert event["config"]["type"] == "CONTINUOUS" and event["config"]["max"] == 1.0
    assert event["source"] == {
        "type": "APP_USER",
        "source_id": f"token:{token['id']}",
        "model": None,
        "model_version": None,
        "run_id": None,
    }
    assert len(events) == 5
    assert sum(1 for e in events if e.startswith(f"tok-{link_token_id}-")) == 3


def test_presigned_url_refusals(service: Served) -> None:
    token = issue(service, feedback_config=CONTINUOUS)
    signer = TokenSigner((CURRENT,))
    claims = signer.verify(token["token"])

    def at(raw: str) -> str:
        return f"/v1/feedback-tokens/{raw}"

    expired = signer.sign(TokenClaims(**{**claims.__dict__, "expires_at": int(time.time()) - 1}))
    refused(service.public.post(at(expired), json={"score": 1}), 401, "token expired at")

    version, kid, body, sig = token["token"].split(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=="))
    data["rid"] = "someone-elses-request"
    tampered = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    refused(
        service.public.post(at(f"{version}.{kid}.{tampered}.{sig}"), json={"score": 1}),
        401,
        "signature does not match",
    )
    forged = TokenSigner((TokenSecret(kid="v2", secret=SecretStr("guessed-secret-" + "g" * 20)),)).sign(
        claims
    )
    refused(service.public.post(at(forged), json={"score": 1}), 401, "signature does not match")
    unknown = TokenSigner((TokenSecret(kid="v9", secret=SecretStr("g" * 32)),)).sign(claims)
    refused(service.public.get(at(unknown), params={"score": 1}), 401, "unknown key id 'v9'")
    refused(service.public.post(at("not-a-token"), json={"score": 1}), 401, "malformed token")

    refused(
        service.public.post(token["url"], json={"score": 1, "request_id": "req-2"}),
        403,
        "token is for request 'req-1', not 'req-2'",
    )
    refused(
        service.public.post(token["url"], json={"score": 1, "key": "stars"}), 403, "feedback key 'thumbs'"
    )
    refused(
        service.public.post(token["url"], json={"score": 5}), 422, "score: 5.0 is above the config's max 1.0"
    )
    refused(service.public.get(token["url"], params={"score": "lots"}), 422, "score")
    category = issue(service, feedback_key="verdict", feedback_config=CATEGORICAL)
    refused(
        service.public.post(category["url"], json={"value": "meh"}), 422, "'meh' is not an allowed category"
    )
    assert service.public.post(category["url"], json={"value": "good", "score": 1}).status_code == 202

    refused(
        service.public.post("/v1/feedback-tokens", json={"request_id": "r", "feedback_key": "k"}),
        401,
        "missing X-API-Key",
    )
    refused(
        service.client.post(
            "/v1/feedback-tokens", json={"request_id": "r", "feedback_key": "k", "expires_in": 10**9}
        ),
        422,
        "expires_in",
        "maximum",
    )
    refused(
        service.client.post(
            "/v1/feedback-tokens",
            json={"request_id": "r", "feedback_key": "k", "feedback_config": {"type": "CATEGORICAL"}},
        ),
        422,
        "categories",
    )
    # The refused submissions did not burn the single-use token.
    assert service.public.post(token["url"], json={"score": 0}).status_code == 202


# --------------------------------------------------------------------------- limits and CORS
def test_rate_limits_answer_429_with_retry_after(make_settings: Callable[..., Settings]) -> None:
    with serve(
        make_settings(partitions=1), key_rate=0.01, key_burst=3, token_rate=0.01, token_burst=2
    ) as served:
        statuses = [served.client.get("/v1/feedback").status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        limited = refused(served.client.get("/v1/feedback"), 429, "rate limit of this API key")
        assert limited["error"] == "rate_limited"
        response = served.client.get("/v1/feedback")
        assert int(response.headers["Retry-After"]) >= 1

        signer = TokenSigner((CURRENT,))
        token, _ = signer.issue("req-1", "thumbs", 600, TokenReuse.EXPIRY)
        url = f"/v1/feedback-tokens/{token}"
        assert [served.public.get(url, params={"score": 1}).status_code for _ in range(2)] == [202, 202]
        response = served.public.get(url, params={"score": 1})
        refused(response, 429, "rate limit of this token")
        assert int(response.headers["Retry-After"]) >= 1
        other, _ = signer.issue("req-1", "thumbs", 600, TokenReuse.EXPIRY)  # buckets are per token
        assert served.public.get(f"/v1/feedback-tokens/{other}", params={"score": 1}).status_code == 202


def test_repeated_failed_authentication_locks_the_client_out(make_settings: Callable[..., Settings]) -> None:
    with serve(make_settings(partitions=1, create=False), auth_failure_rate=0.01, auth_failure_burst=3) as served:
        assert served.client.get("/v1/feedback").status_code == 200
        for _ in range(3):  # guessing keys
            refused(served.public.get("/v1/feedback", headers={"X-API-Key": "guess"}), 401, "invalid API key")
        locked = served.client.get("/v1/feedback")  # now even the right key waits
        assert refused(locked, 429, "too many failed authentications")["error"] == "too_many_failures"
        assert int(locked.headers["Retry-After"]) >= 1
        refused(served.public.get("/v1/feedback-tokens/forged", params={"score": 1}), 429, "too many failed")


def test_forwarded_for_is_believed_only_from_a_configured_proxy(make_settings: Callable[..., Settings]) -> None:
    """uvicorn's default believed X-Forwarded-For from 127.0.0.1, so a client on the host could spread
    its failed authentications over made-up addresses and never be locked out."""
    settings = make_settings(partitions=1, create=False)

    def guess(served: Served, address: str) -> httpx.Response:
        return served.public.get("/v1/feedback", headers={"X-API-Key": "guess", "X-Forwarded-For": address})

    with serve(settings, auth_failure_rate=0.01, auth_failure_burst=3) as served:
        for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
            refused(guess(served, address), 401, "invalid API key")
        locked = served.client.get("/v1/feedback", headers={"X-Forwarded-For": "10.0.0.4"})
        refused(locked, 429, "too many failed authentications from 127.0.0.1")

    with serve(settings, auth_failure_rate=0.01, auth_failure_burst=3, trusted_proxies=("127.0.0.1",)) as served:
        for _ in range(3):  # behind a trusted proxy, each client address has its own chances
            refused(guess(served, "10.0.0.1"), 401, "invalid API key")
        refused(guess(served, "10.0.0.1"), 429, "too many failed authentications from 10.0.0.1")
        assert served.client.get("/v1/feedback", headers={"X-Forwarded-For": "10.0.0.2"}).status_code == 200


def test_cors_for_browser_widgets(make_settings: Callable[..., Settings]) -> None:
    with serve(make_settings(partitions=1, create=False), cors_origins=("https://app.example",)) as served:
        preflight = served.public.options(
            "/v1/feedback-tokens/x",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        denied = served.public.options(
            "/v1/feedback-tokens/x",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in denied.headers
        assert (denied.status_code, denied.json()["error"], denied.json()["field"]) == (400, "cors_refused", "Origin")
        assert "origin" in denied.json()["message"]
        wrong_method = served.public.options(
            "/v1/feedback",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "PUT"},
        )
        assert wrong_method.status_code == 400
        assert wrong_method.json()["field"] == "Access-Control-Request-Method"
        simple = served.public.get("/healthz", headers={"Origin": "https://app.example"})
        assert simple.headers["access-control-allow-origin"] == "https://app.example"


# --------------------------------------------------------------------------- the OpenAPI spec, fuzzed
@dataclass(frozen=True)
class Nasty:
    """A JSON value (as text) meant to break a field: how deep it nests, and whether it hides a lone surrogate."""

    text: str
    depth: int = 0
    lone_surrogate: bool = False

    @property
    def acceptable(self) -> bool:
        """Whether any endpoint may accept it in any field."""
        return self.depth <= MAX_JSON_DEPTH and not self.lone_surrogate


NASTY_LEAVES = [
    Nasty('"x"'),
    Nasty("null"),
    Nasty("{}", 1),
    Nasty("[]", 1),
    Nasty('"\\ud800"', lone_surrogate=True),
    Nasty('{"\\udc00": 1}', 1, lone_surrogate=True),
    Nasty(str(10**40)),
    Nasty("-1e999"),  # a float too large: infinity
    Nasty("9" * 5000),  # more digits than Python turns into an int
    Nasty(json.dumps("x" * 70_000)),  # over every text field's limit
    Nasty(json.dumps("x" * 300_000)),  # over the body limit: 413
    Nasty("{" + ",".join(f'"k{i}":{i}' for i in range(5000)) + "}", 1),
    Nasty("[" + ",".join("1" for _ in range(50_000)) + "]", 1),
]


def wrapped(leaf: Nasty, depth: int, shape: str) -> Nasty:
    """``leaf`` inside ``depth`` objects, arrays, or both in turn."""
    openers = {"object": ['{"a":'], "array": ["["], "mixed": ['{"a":', "["]}[shape]
    opened = [openers[level % len(openers)] for level in range(depth)]
    closed = "".join("}" if opener.startswith("{") else "]" for opener in reversed(opened))
    return Nasty("".join(opened) + leaf.text + closed, depth + leaf.depth, leaf.lone_surrogate)


NASTY_VALUES = st.one_of(
    st.builds(
        wrapped,
        st.sampled_from(NASTY_LEAVES),
        st.integers(0, 40) | st.sampled_from([MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 300, 990, 1500]),
        st.sampled_from(["object", "array", "mixed"]),
    ),
    st.just(Nasty(nested(100_000, opener="[", closer="]"), 100_000)),
)


def value_paths(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every position in a JSON value, the value itself first."""
    yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from value_paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from value_paths(child, (*path, index))


def with_nasty(body: Any, path: tuple[str | int, ...], nasty: Nasty) -> str:
    """``body`` as JSON text with ``nasty`` at ``path``."""
    if not path:
        return nasty.text
    body = copy.deepcopy(body)
    parent = body
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = "@nasty"
    return json_text(body, nasty=nasty.text)


def check_answer(response: httpx.Response, nasty: Nasty, what: str) -> None:
    """No 5xx; a value no field may hold is refused; every refusal is the API's JSON error."""
    assert response.status_code < 500, f"{what} answered {response.status_code}: {response.text[:300]}"
    if not nasty.acceptable:
        assert response.status_code >= 400, f"{what} accepted {nasty.text[:100]!r}: {response.text[:300]}"
    if response.status_code >= 400:
        assert {"error", "message"} <= set(response.json()), f"{what}: {response.text[:300]}"


def test_nested_or_oversized_value_in_any_json_field_is_refused_without_server_error(service: Served) -> None:
    """Valid bodies of every JSON endpoint, each with one value (any field, any depth) replaced by
    something nested or oversized: never a 5xx, and never accepted when no field may hold it."""
    token_url = issue(service, reuse="expiry")["url"]
    judgment = {
        "request_id": "req-n",
        "key": "k",
        "score": 0.5,
        "comment": "c",
        "correction": {"text": "t", "spans": [[0, 1]]},
        "metadata": {"m": "v"},
        "config": CONTINUOUS,
        "source": {"type": "MODEL_JUDGE", "model": "m"},
    }
    bodies: dict[tuple[str, str], Any] = {
        ("POST", "/v1/feedback"): judgment,
        ("POST", "/v1/feedback/batch"): {"feedback": [judgment]},
        ("PATCH", "/v1/feedback/n-1"): {"request_id": "req-n", "comment": "c", "correction": {"t": [1]}},
        ("POST", "/v1/feedback-tokens"): {"request_id": "req-n", "feedback_key": "k", "config": CATEGORICAL},
        ("POST", token_url): {"value": "good", "comment": "c", "correction": {"t": "x"}, "metadata": {"m": "v"}},
    }
    for (method, url), body in bodies.items():  # as they are, each is accepted
        assert send_json(service.client, method, url, json.dumps(body)).status_code < 300, (method, url)
    targets = [(method, url, body, path) for (method, url), body in bodies.items() for path in value_paths(body)]

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(target=st.sampled_from(targets), nasty=NASTY_VALUES)
    def check(target: tuple[str, str, Any, tuple[str | int, ...]], nasty: Nasty) -> None:
        method, url, body, path = target
        response = send_json(service.client, method, url, with_nasty(body, path, nasty))
        check_answer(response, nasty, f"{method} {url.split('/v1/')[-1][:40]} with {path} = {nasty.text[:60]!r}")

    check()


def test_openapi_property_based_run_finds_no_server_error(service: Served) -> None:
    """Schemathesis generates requests from /openapi.json (with and without the API key): no 5xx."""
    import schemathesis

    spec = service.client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert {
        "/v1/feedback",
        "/v1/feedback/batch",
        "/v1/feedback/{feedback_id}",
        "/v1/feedback-tokens",
        "/v1/feedback-tokens/{token}",
        "/v1/requests/{request_id}",
    } <= set(paths)

    schema = schemathesis.openapi.from_dict(spec.json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    failures: list[str] = []
    statuses: dict[int, int] = {}

    def fuzz(operation: Any) -> Callable[[], None]:
        @settings(
            max_examples=30,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(), data=st.data())
        def check(case: Any, data: st.DataObject) -> None:
            generated = dict(case.headers or {})
            # First with a valid key (so the handlers run), then with whatever header was generated.
            for headers in ({**generated, "X-API-Key": API_KEY}, generated):
                case.headers = headers
                response = case.call(base_url=service.url, timeout=30)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                assert response.status_code < 500, (
                    f"{operation.label} answered {response.status_code}: path {case.path_parameters}, "
                    f"query {case.query}, body {case.body!r:.300}: {response.text[:200]}"
                )
            if isinstance(case.body, dict | list):  # and once more with a nested or oversized value in it
                path = data.draw(st.sampled_from(list(value_paths(case.body))))
                nasty = data.draw(NASTY_VALUES)
                response = service.client.request(
                    case.method,
                    case.formatted_path,
                    params=case.query,
                    content=with_nasty(case.body, path, nasty).encode("utf-8"),
                    headers={"Content-Type": "application/json"},
                )
                check_answer(response, nasty, f"{operation.label} with {path} = {nasty.text[:60]!r}")

        return check

    for operation in operations:
        try:
            fuzz(operation)()
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, failures
    assert sum(statuses.values()) >= 10 * len(operations), statuses  # it did generate and send requests
    assert any(200 <= status < 300 for status in statuses), statuses  # and some got past the checks


class TinyRegistry(http.server.ThreadingHTTPServer):
    """The two Schema Registry REST calls, in memory: the Kafka broker stays real, only the registry is small."""

    def __init__(self) -> None:
        self.schemas: list[str] = []
        self.subjects: list[str] = []
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                schema = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["schema"]
                if schema not in registry.schemas:
                    registry.schemas.append(schema)
                registry.subjects.append(self.path.split("/")[2])
                self._answer(200, {"id": registry.schemas.index(schema) + 1})

            def do_GET(self) -> None:
                index = int(self.path.rsplit("/", 1)[1]) - 1
                if 0 <= index < len(registry.schemas):
                    self._answer(200, {"schema": registry.schemas[index]})
                else:
                    self._answer(404, {"error_code": 40403, "message": "Schema not found"})

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def test_schema_registry_framing_when_configured(make_settings: Callable[..., Settings]) -> None:
    registry = TinyRegistry()
    thread = threading.Thread(target=registry.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{registry.server_address[1]}"
        settings = make_settings(partitions=1, schema_registry_url=url)
        with serve(settings) as served:
            body = {"id": "sr-1", "request_id": "r", "key": "k", "score": 1}
            assert served.client.post("/v1/feedback", json=body).status_code == 202
        assert registry.subjects == [f"{settings.feedback_topic}-value"]
        [(_, value)] = topic_messages(settings)
        assert value[:1] == b"\x00" and int.from_bytes(value[1:5], "big") == 1  # Confluent framing
        [event] = topic_events(settings, codec_for(settings))
        assert (event["feedback_id"], event["score"]) == ("sr-1", 1.0)
    finally:
        registry.shutdown()
        registry.server_close()


def test_unacknowledged_write_answers_503(make_settings: Callable[..., Settings]) -> None:
    """No broker answers: the write is refused with 503 once the delivery timeout passed, never a 2xx."""
    unreachable = make_settings(create=False, bootstrap_servers="127.0.0.1:1")
    with serve(unreachable, ack_timeout=1.0) as served:
        body = {"id": "lost-1", "request_id": "r", "key": "k", "score": 1}
        response = served.client.post("/v1/feedback", json=body)
        refused(response, 503, "the broker did not acknowledge", "retry with the same feedback id")
        assert response.headers["Retry-After"] == "5"
        # Failures are not cached: the retry is sent again (and refused again), not replayed.
        assert "Idempotent-Replayed" not in served.client.post("/v1/feedback", json=body).headers


# --------------------------------------------------------------------------- the command
def test_serve_command_shuts_down_gracefully(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """``prefpair serve`` in a subprocess: keys from a file, SIGTERM flushes, no secret in the logs."""
    settings = make_settings(partitions=1)
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# production\n{API_KEY}\n")
    port = free_socket().getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFPAIR_")}
    env.update(
        PREFPAIR_BOOTSTRAP_SERVERS=str(settings.bootstrap_servers),
        PREFPAIR_HOME=str(settings.home),
        PREFPAIR_FEEDBACK_TOPIC=settings.feedback_topic,
        PREFPAIR_INFERENCE_TOPIC=settings.inference_topic,
        PREFPAIR_TOKENS_TOPIC=settings.tokens_topic,
        PREFPAIR_EXPERIMENTS_TOPIC=settings.experiments_topic,
        PREFPAIR_TOKEN_SECRETS=f"{CURRENT.kid}:{CURRENT.secret.get_secret_value()}",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "prefpair.cli", "serve", "--port", str(port), "--api-keys-file", str(keys)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).json()["status"] == "ok":
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prefpair serve did not come up"
            time.sleep(0.2)
        headers = {"X-API-Key": API_KEY}
        created = httpx.post(
            f"{url}/v1/feedback",
            headers=headers,
            json={"id": "cli-1", "request_id": "r", "key": "k", "score": 1},
        )
        assert created.status_code == 202, created.text
        token = httpx.post(
            f"{url}/v1/feedback-tokens", headers=headers, json={"request_id": "r", "feedback_key": "k"}
        ).json()
        assert token["url"].startswith(f"http://127.0.0.1:{port}/v1/feedback-tokens/pp1.v2.")
        assert httpx.get(token["url"], params={"score": 1}).status_code == 202
        misplaced = httpx.get(f"{url}/v1/feedback", params={"api_key": API_KEY})  # a key belongs in the header
        assert misplaced.status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "flushed and closed the producer" in stderr
    assert API_KEY not in stderr + stdout
    assert token["token"] not in stderr + stdout  # access log lines mask presigned tokens
    assert "/v1/feedback-tokens/<token>" in stderr
    assert "/v1/feedback?api_key=<redacted>" in stderr  # access log lines mask query values
    assert len(events_of(settings, "cli-1")) == 1


def test_serve_command_needs_api_keys(run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    result = run_cli("serve", env={"PREFPAIR_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert result.returncode == 2
    assert "api_keys" in result.stderr and "PREFPAIR_API_KEYS" in result.stderr
