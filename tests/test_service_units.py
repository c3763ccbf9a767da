"""Service parts that need no broker: tokens, limits, config, and log reads over a written log."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr

from prefpair.cli import main
from prefpair.errors import ConfigError
from prefpair.schemas.log import FEEDBACK_LOG, INFERENCE_LOG, ORPHAN_LOG, SegmentName
from prefpair.service.config import ServiceConfig, TokenReuse, TokenSecret
from prefpair.service.exceptions import BadCursorError, IdempotencyConflictError, TokenError
from prefpair.service.jsonbody import depth_overflow, field_path, nesting_depth
from prefpair.service.limits import IdempotencyCache, RateLimiter
from prefpair.service.reads import FeedbackFilter, LogReader, decode_cursor, encode_cursor
from prefpair.service.server import RedactAccessLog, uvicorn_options
from prefpair.service.tokens import TokenClaims, TokenSigner, UsedTokens
from prefpair.unicode_text import invalid_text

OLD = TokenSecret(kid="old", secret=SecretStr("o" * 32))
NEW = TokenSecret(kid="new", secret=SecretStr("n" * 32))


# --------------------------------------------------------------------------- tokens
def test_token_round_trip_and_rotation() -> None:
    before = TokenSigner((OLD,))
    token, claims = before.issue("req-1", "thumbs", 60, TokenReuse.SINGLE, {"type": "CONTINUOUS", "min": 0})
    assert token.startswith("pp1.old.")
    rotated = TokenSigner((NEW, OLD))  # new secret signs, the old one still verifies
    assert rotated.verify(token) == claims
    assert rotated.issue("req-1", "thumbs", 60, TokenReuse.SINGLE)[0].startswith("pp1.new.")
    retired = TokenSigner((NEW,))
    with pytest.raises(TokenError) as info:
        retired.verify(token)
    assert (info.value.status, info.value.code) == (401, "token_unknown_key")
    assert "unknown key id 'old'" in info.value.reason


def test_token_refusals_name_the_problem() -> None:
    signer = TokenSigner((NEW,))
    token, claims = signer.issue("req-1", "thumbs", 60, TokenReuse.SINGLE, now=1_000)
    with pytest.raises(TokenError, match="expired at"):
        signer.verify(token, now=1_060)
    assert signer.verify(token, now=1_059) == claims

    version, kid, body, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=="))
    data["rid"] = "req-2"
    tampered_body = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    with pytest.raises(TokenError, match="forged or tampered") as info:
        signer.verify(f"{version}.{kid}.{tampered_body}.{sig}", now=1_000)
    assert info.value.status == 401

    forger = TokenSigner((TokenSecret(kid="new", secret=SecretStr("x" * 32)),))
    with pytest.raises(TokenError, match="forged or tampered"):
        signer.verify(forger.sign(claims), now=1_000)
    # "pp1.new.\u00e9.AAAA": non-ASCII claims were once signed over as ASCII (UnicodeEncodeError: 500)
    for garbage in ("", "abc", "pp1.new.a.b.c", "pp2.new.a.b", f"pp1.new.{body}.!!", "pp1.new.\u00e9.AAAA"):
        with pytest.raises(TokenError, match="malformed") as info:
            signer.verify(garbage, now=1_000)
        assert info.value.status == 401


def test_used_tokens_are_bounded_and_forget_expired() -> None:
    used = UsedTokens(capacity=2)
    assert used.claim("a", expires_at=100, now=0)
    assert not used.claim("a", expires_at=100, now=1)
    used.release("a")
    assert used.claim("a", expires_at=100, now=2)
    assert used.claim("b", expires_at=200, now=2)
    assert used.claim("c", expires_at=300, now=2)  # over capacity: the one closest to expiry goes
    assert "a" not in used and len(used) == 2
    assert used.claim("d", expires_at=400, now=250)  # b expired meanwhile
    assert "b" not in used and "c" in used


def test_claims_reject_wrong_types() -> None:
    with pytest.raises(ValueError, match="integer"):
        TokenClaims.from_json({"tid": "t", "rid": "r", "key": "k", "exp": "1", "iat": 0, "reuse": "single"})
    with pytest.raises(ValueError, match="missing"):
        TokenClaims.from_json({"tid": "t"})


# --------------------------------------------------------------------------- limits
def test_rate_limiter_refills() -> None:
    limiter = RateLimiter(rate=2.0, burst=2)
    assert limiter.take("k", now=0.0) == 0.0
    assert limiter.take("k", now=0.0) == 0.0
    assert limiter.take("k", now=0.0) == pytest.approx(0.5)
    assert limiter.take("other", now=0.0) == 0.0  # buckets are per identity
    assert limiter.take("k", now=0.6) == 0.0


def test_idempotency_cache() -> None:
    async def scenario() -> None:
        cache: IdempotencyCache[str] = IdempotencyCache(capacity=2)
        calls: list[str] = []

        async def action() -> str:
            calls.append("x")
            await asyncio.sleep(0.01)
            return f"answer-{len(calls)}"

        first, second = await asyncio.gather(cache.run("id", "fp", action), cache.run("id", "fp", action))
        assert first == ("answer-1", False) and second == ("answer-1", True)  # concurrent repeat waited
        assert await cache.run("id", "fp", action) == ("answer-1", True)
        with pytest.raises(IdempotencyConflictError):
            await cache.run("id", "other-body", action)

        async def failing() -> str:
            raise RuntimeError("broker down")

        with pytest.raises(RuntimeError):
            await cache.run("id2", "fp", failing)
        assert await cache.run("id2", "fp", action) == ("answer-2", False)  # failures are not cached
        await cache.run("id3", "fp", action)
        assert len(cache) == 2 and cache.cached("id", "fp") is None  # least recently used dropped

    asyncio.run(scenario())


# --------------------------------------------------------------------------- JSON bodies
def test_depth_scan_reads_strings_and_names_the_path() -> None:
    assert depth_overflow('{"x": {"y\\u00e9": [[1]]}}', 3) == ["x", "y\u00e9", 0]
    assert depth_overflow('{"x": {"y": [[1]]}}', 4) is None
    assert depth_overflow('[1, 2, {"k": "v", "deep": [[]]}]', 3) == [2, "deep", 0]
    # Brackets inside strings, escaped quotes, a key that looks like structure: not nesting.
    assert depth_overflow('{"[[[[": "{{{{\\"[[[[", "b": "]]]]"}', 1) is None
    assert depth_overflow('"' + "\\\"" * 10_000, 0) is None  # unterminated string of escaped quotes
    assert depth_overflow("[" * 10, 9) == [0] * 9
    text = '{"a":' * 40 + "1" + "}" * 40
    assert nesting_depth(json.loads(text)) == 40
    assert depth_overflow(text, 40) is None and depth_overflow(text, 39) == ["a"] * 39


def test_invalid_text_is_found_in_keys_and_values_at_any_depth() -> None:
    assert invalid_text({"a": [{"b": "ok", "c\U0001f600": ["fine"]}]}) is None
    assert invalid_text({"a": [{"b": "ok"}, {"\ud800": 1}]}) == (
        ["a", 1],
        "key '\\ud800' is not valid Unicode text (it has a lone surrogate)",
    )
    assert invalid_text(["x", ["\udfff"]]) == ([1, 0], "not valid Unicode text (it has a lone surrogate)")
    assert field_path(["a", 1, "k\ud800"]) == "a.1.k\\ud800"  # safe to put in a JSON answer


# --------------------------------------------------------------------------- config
def test_service_config_from_env_and_files(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# ops keys\nkey-from-file\n\n")
    config = ServiceConfig.load(
        {"port": 9000, "api_keys_file": str(keys)},
        environ={
            "PREFPAIR_API_KEYS": "a, b",
            "PREFPAIR_TOKEN_SECRETS": f"v2:{'s' * 20},v1:{'t' * 20}",
            "PREFPAIR_SERVICE_PORT": "7000",
            "PREFPAIR_CORS_ORIGINS": "https://a.example,https://b.example",
            "PREFPAIR_TOKEN_REUSE": "expiry",
            "PREFPAIR_TRUSTED_PROXIES": "10.0.0.7, 10.1.0.0/16",
        },
    )
    assert config.port == 9000  # flag beats environment
    assert [k.get_secret_value() for k in config.api_keys] == ["a", "b", "key-from-file"]
    assert [s.kid for s in config.token_secrets] == ["v2", "v1"]
    assert config.cors_origins == ("https://a.example", "https://b.example")
    assert config.token_reuse is TokenReuse.EXPIRY
    assert config.trusted_proxies == ("10.0.0.7", "10.1.0.0/16")
    assert ServiceConfig.load(environ={}).trusted_proxies == ()  # no proxy is believed by default
    assert config.base_url == "http://127.0.0.1:9000"
    assert "key-from-file" not in repr(config) and "sss" not in repr(config)


@pytest.mark.parametrize(
    ("environ", "field", "reason"),
    [
        ({"PREFPAIR_TOKEN_SECRETS": "nokid"}, "token_secrets", "KID:SECRET"),
        ({"PREFPAIR_TOKEN_SECRETS": "k:short"}, "token_secrets.secret", "at least 16"),
        ({"PREFPAIR_SERVICE_PORT": "http"}, "port", "integer"),
        ({"PREFPAIR_TOKEN_REUSE": "twice"}, "token_reuse", "single"),
        ({"PREFPAIR_API_KEYS_FILE": "/nonexistent/keys"}, "api_keys_file", "cannot read"),
        ({"PREFPAIR_TRUSTED_PROXIES": "proxy.local"}, "trusted_proxies", "'proxy.local' is not an IP address"),
        ({"PREFPAIR_TRUSTED_PROXIES": "10.0.0.1/8"}, "trusted_proxies", "not an IP address or network"),
        ({"PREFPAIR_TRUSTED_PROXIES": "*,10.0.0.1"}, "trusted_proxies", "'*' (trust any proxy) stands alone"),
    ],
)
def test_service_config_errors_name_the_field(environ: dict[str, str], field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        ServiceConfig.load(environ=environ)
    assert info.value.field == field
    assert reason in info.value.reason


def test_uvicorn_believes_forwarded_headers_only_from_configured_proxies() -> None:
    assert uvicorn_options(ServiceConfig())["proxy_headers"] is False
    behind = uvicorn_options(ServiceConfig(trusted_proxies=("10.0.0.7",)))
    assert (behind["proxy_headers"], behind["forwarded_allow_ips"]) == (True, ["10.0.0.7"])
    assert uvicorn_options(ServiceConfig(trusted_proxies=("*",)))["forwarded_allow_ips"] == "*"


def test_access_log_masks_tokens_and_every_query_value() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/v1/feedback?api_key=s3cret-key&limit=5&bare", "1.1", 401),
        None,
    )
    assert RedactAccessLog().filter(record)
    assert record.getMessage() == (
        '127.0.0.1:5000 - "GET /v1/feedback?api_key=<redacted>&limit=<redacted>&<redacted> HTTP/1.1" 401'
    )
    assert RedactAccessLog.redact("/v1/feedback-tokens/pp1.v2.abc.def?score=1&comment=call%20me") == (
        "/v1/feedback-tokens/<token>?score=<redacted>&comment=<redacted>"
    )
    assert RedactAccessLog.redact("/v1/feedback/f1") == "/v1/feedback/f1"


# --------------------------------------------------------------------------- reads over a written log
SOURCE = {"type": "API", "source_id": None, "model": None, "model_version": None, "run_id": None}


def _inference(request_id: str, offset: int) -> dict[str, Any]:
    return {
        "inference_event_id": f"ie-{request_id}",
        "request_id": request_id,
        "inference_timestamp_ms": 500,
        "system_prompt": None,
        "prompt": f"prompt of {request_id}",
        "messages": None,
        "candidates": [
            {
                "candidate_id": "a",
                "text": "A",
                "messages": None,
                "model_name": "m",
                "model_version": None,
                "model_checkpoint": None,
                "temperature": None,
                "top_p": None,
                "max_tokens": None,
                "seed": None,
                "sampling_extra": [],
                "finish_reason": None,
                "prompt_tokens": None,
                "completion_tokens": None,
                "latency_ms": None,
            }
        ],
        "presentation_order": [],
        "user_id": None,
        "session_id": None,
        "environment": None,
        "tags": [],
        "inference_metadata": [("app", "test")],
        "inference_topic": "inf",
        "inference_partition": 0,
        "inference_offset": offset,
    }


def _feedback(
    feedback_id: str, op: str, request_id: str, offset: int, ts: int, **fields: Any
) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(FEEDBACK_LOG.names)
    row.update({k: v for k, v in _inference(request_id, 0).items() if k != "request_id"})
    row.update(
        feedback_event_id=f"ev-{offset}",
        feedback_id=feedback_id,
        op=op,
        request_id=request_id,
        feedback_timestamp_ms=ts,
        feedback_metadata=[],
        feedback_topic="fb",
        feedback_partition=0,
        feedback_offset=offset,
        joined_at_ms=ts,
        join_path="hot",
    )
    row.update(fields)
    return row


def _orphan(joined_row: dict[str, Any], reason: str = "inference did not arrive in time") -> dict[str, Any]:
    row = {name: joined_row.get(name) for name in ORPHAN_LOG.names}
    row.update(orphaned_at_ms=joined_row["feedback_timestamp_ms"], reason=reason)
    return row


def _write_segment(
    log_dir: Path,
    index: int,
    inference: list[dict[str, Any]],
    feedback: list[dict[str, Any]],
    orphans: list[dict[str, Any]] | None = None,
) -> None:
    name = SegmentName(0, index * 100, index * 100 + len(inference), index * 100, index * 100 + len(feedback))
    path = name.path(log_dir)
    path.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(inference, schema=INFERENCE_LOG), path / "inference.parquet")
    pq.write_table(pa.Table.from_pylist(feedback, schema=FEEDBACK_LOG), path / "feedback.parquet")
    if orphans is not None:
        pq.write_table(pa.Table.from_pylist(orphans, schema=ORPHAN_LOG), path / "orphans.parquet")


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """A log of two segments: creates, an update, a delete, a re-create and an update after a delete."""
    log = tmp_path / "home" / "log"
    config = {"type": "CONTINUOUS", "min": 0.0, "max": 1.0, "categories": []}
    _write_segment(
        log,
        0,
        [_inference("r1", 0)],
        [
            _feedback(
                "f1",
                "CREATE",
                "r1",
                0,
                1000,
                key="rating",
                kind="SCORE",
                score=1.0,
                comment="good",
                source=SOURCE,
                config=config,
                feedback_metadata=[("ui", "v1")],
            ),
            _feedback("f2", "CREATE", "r1", 1, 1001, key="rating", kind="SCORE", score=0.0, source=SOURCE),
            _feedback(
                "f3",
                "CREATE",
                "r2",
                2,
                1002,
                key="pref",
                kind="PAIRWISE",
                outcome="PREFERRED",
                chosen_id="a",
                rejected_id="b",
                source={**SOURCE, "type": "HUMAN_ANNOTATOR"},
            ),
        ],
    )
    _write_segment(
        log,
        1,
        [_inference("r2", 1)],
        [
            _feedback("f1", "UPDATE", "r1", 3, 1500, score=0.5, feedback_metadata=[("ui", "v2")]),
            _feedback("f2", "DELETE", "r1", 4, 1501),
            _feedback("f2", "UPDATE", "r1", 5, 1502, comment="too late"),  # after the delete: ignored
            _feedback("f4", "CREATE", "r2", 6, 1003, key="rating", kind="SCORE", value="meh", source=SOURCE),
            _feedback("f4", "DELETE", "r2", 7, 1600),
            _feedback("f4", "CREATE", "r2", 8, 1700, key="rating", kind="SCORE", score=1.0, source=SOURCE),
        ],
    )
    (log / "partition=00000" / ".tmp-uncommitted").mkdir()  # readers ignore uncommitted segments
    return log


def test_resolution_latest_op_wins(log_dir: Path) -> None:
    reader = LogReader(log_dir)
    f1 = reader.get_feedback("f1")
    assert f1 is not None
    assert (f1["score"], f1["comment"], f1["key"]) == (0.5, "good", "rating")  # patched field-wise
    assert f1["metadata"] == {"ui": "v2"}
    assert f1["config"]["max"] == 1.0
    assert (f1["created_at_ms"], f1["modified_at_ms"]) == (1000, 1500)
    assert f1["created_at"] == "1970-01-01T00:00:01.000Z"
    assert reader.get_feedback("f2") is None  # deleted; a later update does not revive it
    f4 = reader.get_feedback("f4")
    assert f4 is not None and f4["score"] == 1.0 and f4["value"] is None  # re-created after a delete
    assert reader.get_feedback("nope") is None


def test_list_filters_and_cursor_pagination(log_dir: Path) -> None:
    reader = LogReader(log_dir)
    every, cursor = reader.list_feedback(FeedbackFilter(), limit=100)
    assert [f["id"] for f in every] == ["f1", "f3", "f4"] and cursor is None
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = reader.list_feedback(FeedbackFilter(), limit=1, cursor=cursor)
        seen.extend(f["id"] for f in page)
        if cursor is None:
            break
    assert seen == ["f1", "f3", "f4"]

    def ids(**where: Any) -> list[str]:
        return [f["id"] for f in reader.list_feedback(FeedbackFilter(**where))[0]]

    assert ids(request_id="r1") == ["f1"]
    assert ids(key="pref") == ["f3"]
    assert ids(source_type="HUMAN_ANNOTATOR") == ["f3"]
    assert ids(has_score=True) == ["f1", "f4"]
    assert ids(has_score=False) == ["f3"]
    assert ids(has_comment=True) == ["f1"]
    assert ids(since_ms=1002, until_ms=1700) == ["f3"]
    with pytest.raises(BadCursorError):
        reader.list_feedback(FeedbackFilter(), cursor="bm90IGEgY3Vyc29y")


def _cursor_of(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# Cursors that decode to JSON but to no position of the log (each once reached DuckDB or recursed).
OUT_OF_RANGE_CURSORS = {
    "timestamp above BIGINT": (_cursor_of(json.dumps([10**40, "a"]).encode()), "not a log timestamp"),
    "negative timestamp": (_cursor_of(b'[-1, "a"]'), "not a log timestamp"),
    "lone surrogate in the id": (_cursor_of(b'[1, "\\ud800"]'), "not Unicode text"),
    "nested 1500 deep": (_cursor_of(b"[" * 1500), "not a cursor this service handed out"),
}


@pytest.mark.parametrize("name", OUT_OF_RANGE_CURSORS)
def test_cursor_outside_the_logs_range_is_refused_before_the_query(log_dir: Path, name: str) -> None:
    cursor, reason = OUT_OF_RANGE_CURSORS[name]
    assert len(cursor) <= 2048  # what the API accepts
    with pytest.raises(BadCursorError) as info:
        LogReader(log_dir).list_feedback(FeedbackFilter(), cursor=cursor)
    assert reason in info.value.reason
    largest = encode_cursor(2**63 - 1, "f9")  # the edge of the range is still a position
    assert LogReader(log_dir).list_feedback(FeedbackFilter(), cursor=largest) == ([], None)


def test_cursor_is_opaque_base64_of_last_position() -> None:
    cursor = encode_cursor(1234, "f/1")
    assert decode_cursor(cursor) == (1234, "f/1")
    assert json.loads(base64.urlsafe_b64decode(cursor + "==")) == [1234, "f/1"]
    for bad in (
        "",
        "***",
        base64.urlsafe_b64encode(b'["x", 1]').decode(),
        base64.urlsafe_b64encode(b"[1]").decode(),
    ):
        with pytest.raises(BadCursorError):
            decode_cursor(bad)


def test_inference_lookup(log_dir: Path) -> None:
    reader = LogReader(log_dir)
    inference = reader.get_inference("r2")
    assert inference is not None
    assert inference["event_id"] == "ie-r2" and inference["metadata"] == {"app": "test"}
    assert inference["candidates"][0]["candidate_id"] == "a"
    assert reader.get_inference("r9") is None
    assert LogReader(log_dir.parent / "empty").list_feedback(FeedbackFilter()) == ([], None)


def test_cli_feedback_list_and_show(log_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = ["--home", str(log_dir.parent)]
    assert main(["feedback", "list", *home, "--has-score", "--limit", "1"]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["f1"]
    cursor = err.split("next cursor: ")[1].strip()
    assert main(["feedback", "list", *home, "--has-score", "--cursor", cursor]) == 0
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == ["f4"]
    assert (
        main(["feedback", "list", *home, "--all", "--limit", "1", "--since", "1970-01-01T00:00:01.002"]) == 0
    )
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == ["f3", "f4"]
    assert main(["feedback", "show", *home, "f1"]) == 0
    assert json.loads(capsys.readouterr().out)["score"] == 0.5
    assert main(["feedback", "show", *home, "f2"]) == 1
    assert "not in the log" in capsys.readouterr().err
    assert main(["feedback", "list", *home, "--cursor", "garbage"]) == 2
    assert "cursor" in capsys.readouterr().err


def test_resolution_orders_by_timestamp_then_position_and_reads_orphans(tmp_path: Path) -> None:
    """The latest op by (feedback_timestamp_ms, partition, offset) wins; orphans are read too."""
    log = tmp_path / "log"
    create = _feedback("f5", "CREATE", "r5", 10, 2000, key="rating", kind="SCORE", score=0.0, source=SOURCE)
    update = _feedback("f5", "UPDATE", "r5", 9, 2100, score=1.0)  # earlier offset, later timestamp
    late_delete = _feedback("f7", "DELETE", "r7", 4, 3000)
    f7 = _feedback("f7", "CREATE", "r7", 5, 2500, key="rating", kind="SCORE", score=1.0, source=SOURCE)
    orphan = _feedback("f6", "CREATE", "r6", 11, 2200, key="rating", kind="SCORE", score=0.5, source=SOURCE)
    rejoined = _feedback("f8", "CREATE", "r5", 12, 2300, key="rating", kind="SCORE", score=0.5, source=SOURCE)
    _write_segment(
        log,
        0,
        [_inference("r5", 0)],
        [create, update, late_delete, f7, rejoined],
        orphans=[_orphan(orphan), _orphan(rejoined)],  # f8 was an orphan before it was joined
    )
    reader = LogReader(log)
    f5 = reader.get_feedback("f5")
    assert f5 is not None and f5["score"] == 1.0 and f5["events"] == 2
    assert reader.get_feedback("f7") is None  # the delete has the later timestamp
    f6 = reader.get_feedback("f6")
    assert f6 is not None and f6["joined"] is False and f6["orphan_reason"].startswith("inference did not")
    f8 = reader.get_feedback("f8")
    assert f8 is not None and f8["joined"] is True and f8["events"] == 1  # one event, read once
    assert [f["id"] for f in reader.list_feedback(FeedbackFilter())[0]] == ["f5", "f6", "f8"]
    story = reader.get_request("r5")
    assert story is not None and story["inference"]["request_id"] == "r5"
    assert [f["id"] for f in story["feedback"]] == ["f5", "f8"]
    assert reader.get_request("r6") == {"request_id": "r6", "inference": None, "feedback": [f6]}
    assert reader.get_request("nothing") is None


def test_idempotency_cache_forgets_deleted_ids() -> None:
    async def scenario() -> None:
        cache: IdempotencyCache[str] = IdempotencyCache(capacity=10)

        async def answer() -> str:
            return "sent"

        assert await cache.run("f", "fp", answer) == ("sent", False)
        assert await cache.run("f", "fp", answer) == ("sent", True)
        cache.forget("f")
        assert await cache.run("f", "other", answer) == ("sent", False)  # a new feedback under that id

    asyncio.run(scenario())


def test_cli_feedback_show_request(log_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = ["--home", str(log_dir.parent)]
    assert main(["feedback", "show", *home, "--request-id", "r2"]) == 0
    story = json.loads(capsys.readouterr().out)
    assert story["inference"]["prompt"] == "prompt of r2"
    assert [f["id"] for f in story["feedback"]] == ["f3", "f4"]
    assert main(["feedback", "show", *home, "--request-id", "r9"]) == 1
    assert "request 'r9' is not in the log" in capsys.readouterr().err
    assert main(["feedback", "show", *home]) == 2
    assert "either a FEEDBACK_ID or --request-id" in capsys.readouterr().err
