"""Token management and comparative experiments over HTTP, against the real broker.

Two service instances share the tokens and experiments topics (as replicas behind a load balancer
would): a revocation made through one is refused by the other within a bounded time (measured and
printed), listings show issued, used and revoked tokens, and each use has its audit entry.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import duckdb
import httpx
import pytest
from service_support import CURRENT, Served, refused, serve, topic_events

from prefpair.config import Settings
from prefpair.consumers import ConsumerConfig, ConsumerDaemon
from prefpair.producers import PreferenceLogger
from prefpair.report import ReportConfig, build_report
from prefpair.schemas.log import table_files
from prefpair.service.config import TokenReuse
from prefpair.service.token_ledger import TokenEvent, TokenLedger
from prefpair.service.tokens import TokenSigner

REVOCATION_BOUND_S = 15.0


def wait_ready(served: Served) -> None:
    """Until the instance follows the tokens and experiments topics (a guard, not an assertion on time)."""
    deadline = time.monotonic() + 60
    while served.client.get("/healthz").json()["status"] != "ok":
        assert time.monotonic() < deadline, "the service did not become ready"
        time.sleep(0.1)


@pytest.fixture
def two_instances(make_settings: Callable[..., Settings]) -> Iterator[tuple[Served, Served]]:
    settings = make_settings(partitions=1)
    with serve(settings) as first, serve(settings) as second:
        wait_ready(first)
        wait_ready(second)
        yield first, second


def issue(served: Served, request_id: str, key: str = "thumbs", reuse: str = "expiry") -> dict[str, str]:
    response = served.client.post(
        "/v1/feedback-tokens", json={"request_id": request_id, "feedback_key": key, "reuse": reuse}
    )
    assert response.status_code == 201, response.text
    token: dict[str, str] = response.json()
    return token


def submit(served: Served, token: dict[str, str], score: float = 1) -> httpx.Response:
    return served.public.post(f"/v1/feedback-tokens/{token['token']}", json={"score": score})


def test_a_token_revoked_on_one_instance_is_refused_by_the_other(two_instances: tuple[Served, Served]) -> None:
    a, b = two_instances
    token = issue(a, "req-revoke")
    assert submit(b, token).status_code == 202  # B accepts a token A issued: verification is stateless
    revoked = a.client.post("/v1/token-revocations", json={"token_id": token["id"], "reason": "leaked"})
    started = time.monotonic()  # the revocation is acknowledged by the broker once A has answered
    assert revoked.status_code == 200, revoked.text
    accepted_meanwhile = 0
    while True:  # poll B until it refuses; the bound is a guard, the latency is measured and printed
        response = submit(b, token)
        if response.status_code == 403:
            break
        assert response.status_code == 202, response.text
        accepted_meanwhile += 1
        assert time.monotonic() - started < REVOCATION_BOUND_S, "instance B never saw the revocation"
        time.sleep(0.01)
    latency = time.monotonic() - started
    print(f"revocation seen by the second instance after {latency * 1000:.0f} ms "
          f"({accepted_meanwhile} submissions accepted before)")  # fmt: skip
    body = refused(response, 403, "revoked")
    assert body["error"] == "token_revoked" and body["field"] == "token"
    assert revoked.json()["revoked"] == [token["id"]] and revoked.json()["request_id"] == "req-revoke"
    refused(submit(a, token), 403, "revoked")  # and the instance that revoked refuses it too


def test_listing_shows_issued_used_and_revoked_tokens_with_an_audit_trail(
    two_instances: tuple[Served, Served],
) -> None:
    a, b = two_instances
    used = issue(a, "req-list", reuse="single")
    revoked = issue(a, "req-list", key="stars")
    fresh = issue(b, "req-list")
    other = issue(b, "req-other")
    assert submit(b, used).status_code == 202  # used through B, issued by A
    assert a.client.post("/v1/token-revocations", json={"token_id": revoked["id"]}).status_code == 200

    def listing(served: Served, **params: str) -> dict[str, dict[str, object]]:
        response = served.client.get("/v1/feedback-tokens", params=params)
        assert response.status_code == 200, response.text
        return {item["id"]: item for item in response.json()["items"]}

    deadline = time.monotonic() + REVOCATION_BOUND_S
    while True:  # each instance lists what both did once its follower has read it
        views = [listing(s, request_id="req-list") for s in (a, b)]
        statuses = [{i: v[i]["status"] for i in v} for v in views]
        expected = {used["id"]: "used", revoked["id"]: "revoked", fresh["id"]: "active"}
        if all(s == expected for s in statuses):
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.05)
    item = views[1][used["id"]]
    assert (item["used"], item["uses"], item["revoked"], item["feedback_key"]) == (True, 1, False, "thumbs")
    assert views[0][revoked["id"]]["revoked"] is True and views[0][revoked["id"]]["revoked_at"]
    assert set(listing(a, used="false", request_id="req-list")) == {revoked["id"], fresh["id"]}
    assert set(listing(b, status="revoked")) == {revoked["id"]}
    assert set(listing(b, feedback_key="stars")) == {revoked["id"]}
    assert other["id"] in listing(a) and other["id"] not in listing(a, request_id="req-list")
    later = int(time.time()) + 10 * 86400
    assert listing(a, expires_after=str(later)) == {}

    # A single-use token used through B is refused by A too: the use is an event both follow.
    refused(submit(a, used), 403, "already used")

    audit = a.client.get(f"/v1/feedback-tokens/{used['id']}/audit")
    assert audit.status_code == 200, audit.text
    trail = audit.json()["events"]
    assert [e["type"] for e in trail] == ["issued", "used"]
    assert trail[1]["feedback_id"] == f"tok-{used['id']}" and trail[1]["client"] == "127.0.0.1"
    assert trail[0]["instance"] != trail[1]["instance"]  # issued through A, used through B
    refused(a.client.get("/v1/feedback-tokens/nope/audit"), 404, "no token")

    # Revoke every token of a request: both remaining ones are refused, a new one is not.
    everything = b.client.post("/v1/token-revocations", json={"request_id": "req-list"})
    assert everything.status_code == 200, everything.text
    assert set(everything.json()["revoked"]) == {used["id"], revoked["id"], fresh["id"]}
    refused(submit(b, fresh), 403, "every token of request")
    newer = issue(b, "req-list")
    assert submit(b, newer).status_code == 202
    refused(a.client.post("/v1/token-revocations", json={}), 422, "token_id")
    refused(a.client.post("/v1/token-revocations", json={"token_id": "unknown"}), 404, "request_id")
    refused(a.public.get("/v1/feedback-tokens"), 401)


def test_experiments_are_defined_and_listed_through_the_service_and_the_sdk(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(partitions=1)
    with PreferenceLogger(settings) as logger:
        made = logger.create_experiment("large vs small", ["chat-large", "chat-small:v2"], metadata={"team": "x"})
        request_id = logger.log_inference(
            prompt="p", candidates=[{"candidate_id": "a", "text": "A", "model_name": "chat-large"},
                                    {"candidate_id": "b", "text": "B", "model_name": "chat-small",
                                     "model_version": "v2"}],
        )  # fmt: skip
        logger.log_preference(request_id, chosen="a", rejected="b", experiment_id=made.experiment_id,
                              feedback_group_id="g-1")  # fmt: skip
    with serve(settings) as served:
        wait_ready(served)
        listed = served.client.get("/v1/experiments").json()["items"]
        assert [(e["id"], e["arms"], e["metadata"]) for e in listed] == [
            (made.experiment_id, ["chat-large", "chat-small:v2"], {"team": "x"})
        ]
        created = served.client.post(
            "/v1/experiments", json={"id": "exp-http", "name": "A/B", "arms": ["m1", "m2", "m3"]}
        )
        assert created.status_code == 201, created.text
        again = served.client.post("/v1/experiments", json={"id": "exp-http", "name": "A/B",
                                                             "arms": ["m1", "m2", "m3"]})  # fmt: skip
        assert again.status_code == 201 and again.json() == created.json()  # the same definition: a no-op
        refused(served.client.post("/v1/experiments", json={"id": "exp-http", "name": "other", "arms": ["a", "b"]}),
                409, "another definition")  # fmt: skip
        refused(served.client.post("/v1/experiments", json={"name": "x", "arms": ["m1", "m1"]}), 422, "twice")
        refused(served.client.post("/v1/experiments", json={"name": "x", "arms": ["m1"]}), 422, "arms")
        assert served.client.get("/v1/experiments/exp-http").json()["arms"] == ["m1", "m2", "m3"]
        refused(served.client.get("/v1/experiments/nope"), 404, "not defined")
        feedback = served.client.post(
            "/v1/feedback",
            json={"request_id": request_id, "key": "preference", "kind": "PAIRWISE", "outcome": "PREFERRED",
                  "chosen_id": "a", "rejected_id": "b", "experiment_id": "exp-http", "feedback_group_id": "g-2"},
        )  # fmt: skip
        assert feedback.status_code == 202, feedback.text
        listed_again = served.client.get("/v1/experiments").json()
        spec = served.client.get("/openapi.json").json()
        for path in ("/v1/experiments", "/v1/experiments/{experiment_id}", "/v1/token-revocations",
                     "/v1/feedback-tokens/{token_id}/audit"):  # fmt: skip
            assert path in spec["paths"], path
        assert "get" in spec["paths"]["/v1/feedback-tokens"]
        assert "experiment_id" in spec["components"]["schemas"]["FeedbackCreate"]["properties"]
    with PreferenceLogger(settings) as logger:
        assert sorted(e.experiment_id for e in logger.list_experiments()) == sorted(["exp-http", made.experiment_id])
    events = [(e["experiment_id"], e["feedback_group_id"]) for e in topic_events(settings) if e["kind"]]
    assert sorted(events) == sorted([("exp-http", "g-2"), (made.experiment_id, "g-1")])

    # Through the consumer into the log, and into the report's experiment sections.
    stats = ConsumerDaemon(
        settings, ConsumerConfig(group_id="experiments", grace_ms=60_000, flush_interval_ms=100)
    ).run(until_caught_up=True)
    assert (stats.joined, stats.dead_letters) == (2, 0)
    files = [str(f) for f in table_files(settings.log_dir, "feedback")]
    rows = duckdb.sql(f"SELECT experiment_id, feedback_group_id FROM read_parquet({files})").fetchall()
    assert sorted(rows) == sorted([("exp-http", "g-2"), (made.experiment_id, "g-1")])
    definitions = settings.home / "experiments.json"
    definitions.write_text(json.dumps(listed_again))
    report = build_report(settings.log_dir, settings.home / "report",
                          ReportConfig(bootstrap_rounds=10, experiments=definitions))  # fmt: skip
    sections = {e["experiment_id"]: e for e in report.experiments}
    assert sections[made.experiment_id]["name"] == "large vs small"
    assert sections[made.experiment_id]["pairs"][0]["wins_a"] == 1  # chat-large over chat-small
    assert sections["exp-http"]["judgments_outside_arms"] == 1  # its arms are m1..m3, not these models


def test_the_ledger_counts_an_event_once_whichever_copy_comes_first() -> None:
    """An instance applies its own events at once and skips their copies read back from the topic,
    whether the copy arrives after its acknowledgement or before it."""
    claims = TokenSigner((CURRENT,)).issue("r", "k", 60, TokenReuse.SINGLE)[1]
    used_here: list[str] = []
    ledger = TokenLedger(on_used=lambda token_id, _: used_here.append(token_id))
    issued = TokenEvent(type="issued", request_id="r", token_id=claims.token_id, feedback_key="k",
                        reuse="single", issued_at=claims.issued_at, expires_at=claims.expires_at)  # fmt: skip
    ledger.expect(issued.event_id)
    ledger.apply(issued)  # the copy read back before the acknowledgement...
    ledger.apply(issued, local=True)  # ...then the sender applies it: once
    use = TokenEvent(type="used", request_id="r", token_id=claims.token_id, reuse="single",
                     expires_at=claims.expires_at, feedback_id="f", client="c")  # fmt: skip
    ledger.apply(use, local=True)
    ledger.apply(use)  # the copy read back later: skipped
    (row,) = ledger.listing(time.time())
    assert (row["status"], row["uses"], used_here) == ("used", 1, [claims.token_id])
    assert [e["type"] for e in ledger.audit(claims.token_id)] == ["issued", "used"]
    assert ledger.revocation(claims) is None
    cut = TokenEvent(type="revoked", request_id="r", at_ms=claims.issued_at * 1000 + 999_999)
    ledger.apply(cut)
    ledger.apply(cut)
    revocation = ledger.revocation(claims)
    assert revocation is not None and revocation.scope == "request"
    assert [e["type"] for e in ledger.audit(claims.token_id)] == ["issued", "used", "revoked"]
    later = TokenSigner((CURRENT,)).issue("r", "k", 60, TokenReuse.SINGLE, now=time.time() + 2000)[1]
    assert ledger.revocation(later) is None  # issued after the request's revocation: still valid
