"""``prefpair judge`` against a real Kafka topic and a real HTTP judge on 127.0.0.1.

The log is built with the simulation's LogBuilder (no consumer run); the judge's HTTP endpoint is
:class:`judge_server.JudgeServer`, whose verdicts follow a known rule (longer wins; a position bias
when the lengths are close), so every judgment written can be predicted and is checked exactly,
read back from the feedback topic.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from conftest import MakeSettings, settings_env
from judge_server import COMPLETION_TOKENS, Behaviour, JudgeServer, prompt_tokens, score_of

from prefpair.config import Settings
from prefpair.judge import (
    CallableEvaluator,
    EndpointError,
    EvaluatorFailedError,
    JudgeConfig,
    JudgeError,
    JudgeSelection,
    Question,
    Reply,
    RunStateError,
    UnparseableAnswerError,
    feedback_id,
    parse_verdict,
    run_judge,
)
from prefpair.judge.select import Response
from prefpair.schemas.wire import SingleObjectCodec
from prefpair.simulate import LogBuilder

WORDS = "the quick brown fox jumps over the lazy dog and keeps running far away "


def _text(n: int, tag: str) -> str:
    body = (WORDS * (n // len(WORDS) + 2))[: max(0, n - len(tag) - 1)]
    text = f"{tag} {body}"[:n]
    return text[:-1] + "." if text.endswith(" ") else text  # the endpoint's messages are stripped


def build_log(log_dir: Path, settings: Settings, requests: int) -> dict[str, list[tuple[str, str]]]:
    """``requests`` logged requests (every 10th with three candidates); returns request -> [(candidate, text)]."""
    log = LogBuilder(log_dir, inference_topic=settings.inference_topic, feedback_topic=settings.feedback_topic)
    made: dict[str, list[tuple[str, str]]] = {}
    for i in range(requests):
        rid = f"r{i:04d}"
        lengths = [30 + (i * 7) % 40, 30 + (i * 13 + 5) % 40] + ([30 + (i * 3) % 45] if i % 10 == 0 else [])
        candidates = [(f"c{j}", _text(n, f"{rid}-c{j}"), f"model-{j % 2}", "v1") for j, n in enumerate(lengths)]
        log.inference(rid, prompt=f"question {rid}?", candidates=candidates, environment="prod" if i % 2 else "dev")
        made[rid] = [(c[0], c[1]) for c in candidates]
        if i % 100 == 99:
            log.commit()
    log.commit()
    return made


def expected_pairwise(
    made: dict[str, list[tuple[str, str]]], run_id: str, margin: int = 10
) -> dict[str, dict[str, Any]]:
    """feedback id -> what the rule says: outcome, chosen, rejected, the verdict of each order, agreement."""
    out: dict[str, dict[str, Any]] = {}
    for rid, candidates in made.items():
        for (x, tx), (y, ty) in itertools.combinations(candidates, 2):
            fid = feedback_id(run_id, rid, "preference", [x, y])
            if abs(len(tx) - len(ty)) >= margin:
                win = x if len(tx) > len(ty) else y
                lose = y if win == x else x
                out[fid] = {"request_id": rid, "outcome": "PREFERRED", "chosen_id": win, "rejected_id": lose,
                            "verdicts": (win, win), "agreement": "true"}  # fmt: skip
            else:  # shown first wins in each order: the orders disagree
                out[fid] = {"request_id": rid, "outcome": "TIE", "chosen_id": x, "rejected_id": y,
                            "verdicts": (x, y), "agreement": "false"}  # fmt: skip
    return out


def read_topic(settings: Settings) -> list[dict[str, Any]]:
    """Every feedback record in the topic, decoded, read to the end of each partition."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": uuid.uuid4().hex,
                         "enable.auto.commit": False, "enable.partition.eof": True})  # fmt: skip
    codec = SingleObjectCodec()
    try:
        topic = settings.feedback_topic
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(settings.feedback_topic, p, 0) for p in partitions])
        remaining, records = set(partitions), []
        while remaining:
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is not None:
                    assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                    remaining.discard(message.partition())
                    continue
                records.append(codec.decode(message.value())[1])
        return records
    finally:
        consumer.close()


def http_config(server: JudgeServer, **overrides: Any) -> JudgeConfig:
    values: dict[str, Any] = {"endpoint": server.url, "judge_model": "judge-1", "backoff_s": 0.01, "progress": False,
                              "concurrency": 4, "run_id": "run-1"}  # fmt: skip
    values.update(overrides)
    return JudgeConfig(**values)


# --------------------------------------------------------------------------- the end-to-end runs
def test_pairwise_run_writes_exactly_the_rule_s_feedback_and_both_orders_were_asked(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings()
    made = build_log(settings.log_dir, settings, requests=300)
    expected = expected_pairwise(made, "run-1")
    with JudgeServer(Behaviour(throttle_every=40)) as server:
        config = http_config(server, prompt_price_per_1k=0.5, completion_price_per_1k=2.0, checkpoint_every=64)
        summary = run_judge(settings, config)

    records = read_topic(settings)
    by_id = {r["feedback_id"]: r for r in records}
    assert len(records) == len(by_id) == len(expected) == summary.written == 360
    for fid, want in expected.items():
        got = by_id[fid]
        assert (got["request_id"], got["outcome"], got["chosen_id"], got["rejected_id"]) == (
            want["request_id"], want["outcome"], want["chosen_id"], want["rejected_id"]), fid
        meta = got["metadata"]
        assert (meta["judge_verdict_1"], meta["judge_verdict_2"]) == want["verdicts"]
        assert meta["judge_agreement"] == want["agreement"]
        assert meta["judge_served_model"] == "judge-1-2026-11-01"
        x, y = meta["judge_order_1"].split(",")
        assert meta["judge_order_2"] == f"{y},{x}"
        assert got["kind"] == "PAIRWISE" and got["key"] == "preference" and got["op"] == "CREATE"
        assert got["source"] == {"type": "MODEL_JUDGE", "source_id": "judge-1", "model": "judge-1",
                                 "model_version": None, "run_id": "run-1"}  # fmt: skip

    # both presentation orders of every pair were asked, and nothing else
    texts = {rid: dict(c) for rid, c in made.items()}
    shown = [(a.prompt.split()[1].rstrip("?"), a.a, a.b) for a in server.asked]
    assert len(shown) == len(set(shown)) == 2 * len(expected)
    for rid, candidates in made.items():
        for (_, tx), (_, ty) in itertools.combinations(candidates, 2):
            assert (rid, tx, ty) in shown and (rid, ty, tx) in shown
    assert texts  # the lookup above used the logged texts
    assert server.asked[0].body["response_format"] == {"type": "json_object"}
    assert [m["role"] for m in server.asked[0].body["messages"]] == ["system", "user"]

    # the counts of the summary: agreement, questions, retries on 429, tokens and cost from `usage`
    agreed = sum(1 for w in expected.values() if w["agreement"] == "true")
    assert (summary.agreed, summary.disagreed) == (agreed, len(expected) - agreed) and 0 < agreed < len(expected)
    assert summary.attempt.questions == len(server.asked) and summary.attempt.retries == server.throttled > 0
    tokens = sum(prompt_tokens(a.body["messages"][-1]["content"]) for a in server.asked)
    assert summary.attempt.prompt_tokens == tokens
    assert summary.attempt.completion_tokens == COMPLETION_TOKENS * len(server.asked)
    assert summary.cost == pytest.approx((tokens * 0.5 + COMPLETION_TOKENS * len(server.asked) * 2.0) / 1000)

    # a rerun of the same run asks nothing and writes nothing
    with JudgeServer() as idle:
        again = run_judge(settings, http_config(idle))
    assert (again.written, again.already_written, len(idle.asked)) == (0, 360, 0)
    assert len(read_topic(settings)) == 360


def test_killed_half_way_and_rerun_writes_each_judgment_once(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings()
    made = build_log(settings.log_dir, settings, requests=200)
    expected = expected_pairwise(made, "run-kill")
    argv = [sys.executable, "-m", "prefpair.cli", "judge", "--run-id", "run-kill", "--judge-model", "judge-1",
            "--no-progress", "--checkpoint-every", "1000", "--concurrency", "2"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFPAIR_")}
    env.update(settings_env(settings))
    with JudgeServer(Behaviour(hold_at=len(expected))) as server:  # half the questions, then nothing
        process = subprocess.Popen([*argv, "--endpoint", server.url], env=env, cwd=tmp_path,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        try:
            assert server.held.wait(60), "the judge never reached the held request"
            # no checkpoint yet (every 1000): what reached Kafka is known only to the topic itself
            while len(read_topic(settings)) < 20:
                assert process.poll() is None, process.communicate()[1][-3000:]
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(30)
    before = read_topic(settings)
    state = json.loads((settings.home / "judge" / "run-kill" / "state.json").read_text())
    assert state["done"] == [] and len(before) >= 20 and len(before) < len(expected)

    with JudgeServer() as server:
        rerun = subprocess.run([*argv, "--endpoint", server.url], env=env, cwd=tmp_path, capture_output=True,
                               text=True, timeout=120, check=False)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["recovered"] == len(before) and summary["already_written"] == len(before)
    assert summary["written"] == len(expected) - len(before)
    records = read_topic(settings)
    ids = [r["feedback_id"] for r in records]
    assert len(ids) == len(set(ids)) == len(expected) and set(ids) == set(expected)
    for record in records:
        want = expected[record["feedback_id"]]
        assert (record["outcome"], record["chosen_id"], record["rejected_id"]) == (
            want["outcome"], want["chosen_id"], want["rejected_id"])
    # the rerun asked only the questions of judgments not already in the topic
    assert len(server.asked) == 2 * summary["written"]


def test_a_server_failing_for_good_stops_the_run_and_the_rerun_finishes_it(make_settings: MakeSettings) -> None:
    settings = make_settings()
    made = build_log(settings.log_dir, settings, requests=60)
    expected = expected_pairwise(made, "run-1")
    with JudgeServer(Behaviour(fail_after=50)) as server, pytest.raises(EndpointError) as failed:
        run_judge(settings, http_config(server, max_retries=2, checkpoint_every=10))
    assert failed.value.status == 500 and failed.value.attempts == 3 and "the judge model is down" in str(failed.value)
    first = read_topic(settings)
    assert 0 < len(first) <= 25
    with JudgeServer() as server:
        summary = run_judge(settings, http_config(server))
    ids = [r["feedback_id"] for r in read_topic(settings)]
    assert len(ids) == len(set(ids)) == len(expected) == summary.written + len(first)


def test_an_unparseable_answer_stops_the_run_with_a_clear_error(make_settings: MakeSettings) -> None:
    settings = make_settings()
    build_log(settings.log_dir, settings, requests=20)
    with JudgeServer(Behaviour(garbage={"question r0007?": "I prefer the first one."})) as server, \
            pytest.raises(UnparseableAnswerError) as caught:  # fmt: skip
        run_judge(settings, http_config(server, concurrency=1))
    error = caught.value
    assert error.request_id == "r0007" and error.answer == "I prefer the first one."
    assert "not JSON" in error.reason and "r0007" in str(error) and "I prefer the first one." in str(error)
    # everything judged before it is written; the same command resumes after the fix
    assert {r["request_id"] for r in read_topic(settings)} == {f"r{i:04d}" for i in range(7)}


def test_length_judge_writes_scores_through_the_cli_and_rankings(
    make_settings: MakeSettings, run_cli: Any
) -> None:
    settings = make_settings()
    made = build_log(settings.log_dir, settings, requests=30)
    result = run_cli("judge", "--evaluator", "length", "--kind", "score", "--environment", "prod", "--no-progress",
                     "--source-type", "reward_model", settings=settings)  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    prod = [rid for i, rid in enumerate(made) if i % 2]
    assert summary["judgments"] == summary["written"] == sum(len(made[r]) for r in prod)
    ranked = run_judge(settings, JudgeConfig(evaluator="prefpair.judge.examples:longer_is_better", kind="ranking",
                                             selection=JudgeSelection(sample=5, seed=3), progress=False))  # fmt: skip
    assert ranked.written == 5
    records = read_topic(settings)
    scores = [r for r in records if r["kind"] == "SCORE"]
    rankings = [r for r in records if r["kind"] == "RANKING"]
    assert {r["request_id"] for r in scores} == set(prod) and len(rankings) == 5
    for r in scores:
        text = dict(made[r["request_id"]])[r["candidate_id"]]
        assert r["score"] == pytest.approx(round(1 + 9 * min(1.0, len(text) / 1000), 3))
        assert r["source"]["type"] == "REWARD_MODEL" and r["key"] == "judge_score"
        assert r["config"]["min"] == 1.0 and r["config"]["max"] == 10.0
    for r in rankings:
        lengths = {c: len(t) for c, t in made[r["request_id"]]}
        flat = [c for group in r["ranking"] for c in group]
        assert [lengths[c] for c in flat] == sorted(lengths.values(), reverse=True)


def test_score_and_ranking_judges_over_http_use_their_templates(make_settings: MakeSettings) -> None:
    settings = make_settings()
    made = build_log(settings.log_dir, settings, requests=20)
    with JudgeServer() as server:
        scored = run_judge(settings, http_config(server, kind="score", run_id="s"))
        ranked = run_judge(settings, http_config(server, kind="ranking", run_id="r", selection={"seed": 4}))
    records = read_topic(settings)
    scores = {(r["request_id"], r["candidate_id"]): r["score"] for r in records if r["kind"] == "SCORE"}
    assert scored.written == len(scores) == sum(len(c) for c in made.values())
    for rid, candidates in made.items():
        for cid, text in candidates:
            assert scores[(rid, cid)] == score_of(text)
    rankings = {r["request_id"]: r for r in records if r["kind"] == "RANKING"}
    assert ranked.written == len(rankings) == len(made)
    shown_orders = set()
    for rid, record in rankings.items():
        lengths = dict((c, len(t)) for c, t in made[rid])
        shown = record["metadata"]["judge_order_1"].split(",")
        shown_orders.add(tuple(shown))
        flat = [c for group in record["ranking"] for c in group]
        assert flat == sorted(shown, key=lambda c: -lengths[c])  # the server's rule, on the order it was shown
    assert len(shown_orders) > 1  # the seeded presentation order is not always the logged one
    systems = {a.body["messages"][0]["content"].split(".")[0] for a in server.asked}
    assert systems == {"You are an impartial judge of answers an assistant gave to a user"}
    assert any("from 1 (worst) to 10 (best)" in a.body["messages"][0]["content"] for a in server.asked)


# --------------------------------------------------------------------------- parsing and refusals
def _question(kind: Any = "pairwise", n: int = 2) -> Question:
    responses = tuple(Response(f"c{i}", "x" * (i + 1), "m", None) for i in range(n))
    return Question(kind, "k", "r1", None, "p", responses, (1.0, 10.0))


@pytest.mark.parametrize(
    ("kind", "answer", "reason"),
    [
        ("pairwise", "A wins", "not JSON (Expecting value at character 0)"),
        ("pairwise", "[1]", "expected a JSON object, got a JSON list"),
        ("pairwise", '{"verdict": "A"}', "field 'winner' is missing; expected one of A, B, tie, both_bad"),
        ("pairwise", '{"winner": "C"}', "field 'winner' is 'C'; expected one of A, B, tie, both_bad"),
        ("score", '{"score": 11}', "field 'score' is 11, outside 1 to 10"),
        ("score", '{"score": "high"}', "field 'score' is 'high'; expected a number from 1 to 10"),
        ("ranking", '{"ranking": ["A", "A"]}', "field 'ranking' is ['A', 'A']; expected every label of A, B once"),
    ],
)
def test_unparseable_answers_name_what_is_wrong(kind: Any, answer: str, reason: str) -> None:
    with pytest.raises(UnparseableAnswerError) as caught:
        parse_verdict(_question(kind), Reply(answer=answer, raw=answer))
    assert caught.value.reason.startswith(reason) and caught.value.order == ("c0", "c1")


def test_answers_parse_into_candidate_ids() -> None:
    q = _question()
    assert parse_verdict(q, Reply('```json\n{"winner": "b"}\n```', "")).winner == "c1"
    assert parse_verdict(q, Reply({"winner": "Both bad"}, "")).winner == "both_bad"
    assert parse_verdict(_question("score"), Reply('{"score": "7.5"}', "")).score == 7.5
    ranking = parse_verdict(_question("ranking", 3), Reply({"ranking": [["C", "A"], "B"]}, "")).ranking
    assert ranking == (("c2", "c0"), ("c1",))


def test_a_run_id_reused_for_another_definition_is_refused(make_settings: MakeSettings) -> None:
    settings = make_settings()
    build_log(settings.log_dir, settings, requests=3)
    run_judge(settings, JudgeConfig(evaluator="length", run_id="same", progress=False))
    with pytest.raises(RunStateError, match="another judge definition"):
        run_judge(settings, JudgeConfig(evaluator="length", kind="score", run_id="same", progress=False))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "evaluator: give exactly one of --evaluator"),
        ({"evaluator": "length", "endpoint": "http://x"}, "evaluator: give exactly one of --evaluator"),
        ({"endpoint": "http://x"}, "judge_model: --endpoint needs --judge-model"),
        ({"endpoint": "ftp://x", "judge_model": "m"}, "endpoint: must be an http(s) URL"),
        ({"evaluator": "nowhere:judge"}, "evaluator 'nowhere:judge': cannot import module 'nowhere'"),
        ({"evaluator": "lenght"},
         "evaluator 'lenght': no entry point of group 'prefpair.judges' has that name (installed: length"),
    ],
)
def test_bad_evaluator_options_are_refused_before_anything_runs(
    values: dict[str, Any], message: str, make_settings: MakeSettings
) -> None:
    settings = make_settings(create=False)  # nothing is read or written: no log, no topics
    with pytest.raises(JudgeError) as caught:
        run_judge(settings, JudgeConfig(**values, progress=False))
    assert str(caught.value).startswith(message)
    assert not (settings.home / "judge").exists()


def test_a_bad_score_range_is_refused() -> None:
    with pytest.raises(ValueError, match="score_min 5 is not below score_max 1"):
        JudgeConfig(score_min=5, score_max=1)


def test_the_selection_parses_times_as_compile_does() -> None:
    assert JudgeSelection(since_ms="2026-11-01").since_ms == 1_793_491_200_000
    with pytest.raises(ValueError, match="ISO-8601"):
        JudgeSelection(until_ms="yesterday")


def test_a_python_evaluator_that_raises_is_named_in_the_error(make_settings: MakeSettings) -> None:
    settings = make_settings()
    build_log(settings.log_dir, settings, requests=3)

    def explode(question: Question) -> Any:
        raise ZeroDivisionError("no verdict today")

    with pytest.raises(EvaluatorFailedError) as caught:
        run_judge(settings, JudgeConfig(evaluator="tests:explode", progress=False, concurrency=1),
                  evaluator=CallableEvaluator(explode, "tests:explode"))  # fmt: skip
    assert str(caught.value) == ("evaluator 'tests:explode' failed on request 'r0000' (candidates shown as c0, c1): "
                                 "ZeroDivisionError: no verdict today")  # fmt: skip
    assert read_topic(settings) == []
