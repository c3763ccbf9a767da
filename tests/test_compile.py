"""The dataset compiler on hand-built logs: derivations, resolution, filters, drops, sampling, formats."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from prefpair.compile import CompileConfig, CompileResult, compile_dataset
from prefpair.simulate import LogBuilder

ALL_TRAIN = {"train": 1.0}


def run(log_dir: Path, out: Path, **config: Any) -> CompileResult:
    config.setdefault("splits", ALL_TRAIN)
    return compile_dataset(log_dir, out, CompileConfig.parse(config))


def records(result: CompileResult, fmt: str = "trl") -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted((result.out_dir / fmt).glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return rows


def pairs(result: CompileResult) -> set[tuple[str, str]]:
    return {(r["chosen"], r["rejected"]) for r in records(result, "trl")}


@pytest.fixture
def log(tmp_path: Path) -> LogBuilder:
    return LogBuilder(tmp_path / "log")


def three(request_id: str, log: LogBuilder, **kw: Any) -> LogBuilder:
    return log.inference(
        request_id,
        prompt=f"prompt {request_id}",
        candidates=[("a", f"A{request_id}", "m1", "v1"), ("b", f"B{request_id}", "m2", "v1"),
                    ("c", f"C{request_id}", "m3", "v2"), ("d", f"D{request_id}", "m1", "v2")],
        presented=["a", "b", "c", "d"],
        **kw,
    )  # fmt: skip


# --------------------------------------------------------------------------- derivations
def test_pairwise_preference_becomes_one_trl_record(log: LogBuilder, tmp_path: Path) -> None:
    log.inference("r1", prompt="Sky colour?", candidates=[("a", "Blue.", "m1", "v1"), ("b", "Green.", "m2", "v1")])
    log.pairwise("r1", "b", "a").commit()
    result = run(log.log_dir, tmp_path / "out")
    assert records(result) == [{"prompt": "Sky colour?", "chosen": "Green.", "rejected": "Blue."}]
    assert result.pairs_total == 1 and result.split_counts == {"train": 1}
    assert result.stage_counts["pairs_pairwise"] == 1


def test_ties_and_both_bad_give_no_pair_but_both_bad_is_unpaired(log: LogBuilder, tmp_path: Path) -> None:
    log.inference("r1").pairwise("r1", "a", "b", outcome="TIE")
    log.inference("r2", candidates=[("a", "x", "m", None), ("b", "y", "m", None)]).pairwise(
        "r2", "a", "b", outcome="BOTH_BAD"
    )
    log.commit()
    result = run(log.log_dir, tmp_path / "out")
    assert result.pairs_total == 0
    assert result.drop_counts == {"tie": 1, "both_bad": 1}
    assert sorted((r["completion"], r["label"]) for r in records(result, "trl_unpaired")) == [
        ("x", False),
        ("y", False),
    ]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("all_pairs", {("Ar", "Br"), ("Ar", "Cr"), ("Ar", "Dr"), ("Br", "Dr"), ("Cr", "Dr")}),
        ("best_worst", {("Ar", "Dr")}),
    ],
)
def test_rankings_with_tie_groups(log: LogBuilder, tmp_path: Path, mode: str, expected: set[Any]) -> None:
    three("r", log).ranking("r", ["a", ["b", "c"], "d"]).commit()
    result = run(log.log_dir, tmp_path / "out", rankings=mode, include_margin=True)
    assert pairs(result) == expected
    margins = {(r["chosen"], r["rejected"]): r["margin"] for r in records(result)}
    # three levels: best against worst is a full-strength preference, one level apart half of one
    assert margins == {pair: 1.0 if pair == ("Ar", "Dr") else 0.5 for pair in expected}


def test_scores_pair_up_per_scorer_with_min_margin(log: LogBuilder, tmp_path: Path) -> None:
    three("r", log)
    rm = {"type": "REWARD_MODEL", "model": "rm", "model_version": "1"}
    log.score("r", "a", 0.9, key="reward", source=rm).score("r", "b", 0.5, key="reward", source=rm)
    log.score("r", "c", 0.1, key="reward", source=rm).score("r", "d", 0.1, key="reward", source=rm)
    # another reward model's scale is never compared with the first one's
    log.score("r", "d", 100.0, key="reward", source={"type": "REWARD_MODEL", "model": "other"})
    log.commit()
    result = run(log.log_dir, tmp_path / "out", min_margin=0.5, include_margin=True, formats=["trl"])
    got = {(r["chosen"], r["rejected"]): r["margin"] for r in records(result)}
    assert got == {("Ar", "Cr"): 0.379949, ("Ar", "Dr"): 0.379949}  # no declared range: tanh(0.8 / 2)
    assert result.drop_counts == {"tie": 1, "below_min_margin": 3}


def test_thumbs_up_against_thumbs_down(log: LogBuilder, tmp_path: Path) -> None:
    log.inference("r").score("r", "a", 0).score("r", "b", 1).commit()
    result = run(log.log_dir, tmp_path / "out")
    assert pairs(result) == {("Lyon.", "Paris.")}
    assert sorted((r["completion"], r["label"]) for r in records(result, "trl_unpaired")) == [
        ("Lyon.", True),
        ("Paris.", False),
    ]


def test_correction_beats_the_output_it_corrects(log: LogBuilder, tmp_path: Path) -> None:
    log.inference("r").correction("r", "b", "Paris is the capital.").commit()
    result = run(log.log_dir, tmp_path / "out", include_provenance=True)
    [row] = records(result)
    assert (row["chosen"], row["rejected"]) == ("Paris is the capital.", "Lyon.")
    assert row["derivation"] == "correction" and row["chosen_model"] is None and row["rejected_model"] == "model-b"


# --------------------------------------------------------------------------- resolution
def test_latest_update_wins_and_keeps_unchanged_fields(log: LogBuilder, tmp_path: Path) -> None:
    log.inference("r").pairwise("r", "a", "b", feedback_id="f1", ts=1000)
    log.update("f1", chosen_id="b", rejected_id="a", ts=3000)  # kind, key, outcome stay
    log.update("f1", chosen_id="a", rejected_id="b", ts=2000)  # older: loses, even though logged later
    log.commit()
    result = run(log.log_dir, tmp_path / "out")
    assert pairs(result) == {("Lyon.", "Paris.")}
    assert result.stage_counts["judgments_live"] == 1


def test_update_to_tie_removes_the_pair(log: LogBuilder, tmp_path: Path) -> None:
    log.inference("r").pairwise("r", "a", "b", feedback_id="f1").update("f1", outcome="TIE").commit()
    assert run(log.log_dir, tmp_path / "out").drop_counts == {"tie": 1}


def test_delete_removes_and_recreate_restores(log: LogBuilder, tmp_path: Path) -> None:
    log.inference("r1").pairwise("r1", "a", "b", feedback_id="f1").delete("f1")
    log.inference("r2", prompt="other").pairwise("r2", "a", "b", feedback_id="f2").delete("f2")
    log.pairwise("r2", "b", "a", feedback_id="f2")  # re-created after the delete
    log.update("f1", outcome="PREFERRED")  # an update of deleted feedback does not revive it
    log.commit()
    result = run(log.log_dir, tmp_path / "out")
    assert [(r["prompt"], r["chosen"]) for r in records(result)] == [("other", "Lyon.")]
    assert result.drop_counts == {"deleted": 1}


def test_resolution_spans_segments_and_partitions(log: LogBuilder, tmp_path: Path) -> None:
    log.inference("r").pairwise("r", "a", "b", feedback_id="f1", ts=1000)
    log.commit()
    log.update("f1", chosen_id="b", rejected_id="a", ts=2000)
    log.commit()
    assert pairs(run(log.log_dir, tmp_path / "out")) == {("Lyon.", "Paris.")}


def test_orphans_count_unless_their_inference_landed_later(log: LogBuilder, tmp_path: Path) -> None:
    log.orphan("missing", key="preference", kind="PAIRWISE", outcome="PREFERRED", chosen_id="a", rejected_id="b")
    log.orphan("late", key="preference", kind="PAIRWISE", outcome="PREFERRED", chosen_id="b", rejected_id="a")
    log.commit()
    log.inference("late", prompt="late prompt")  # lands in the inference table after the grace
    log.commit()
    result = run(log.log_dir, tmp_path / "out")
    assert [(r["prompt"], r["chosen"]) for r in records(result)] == [("late prompt", "Lyon.")]
    assert result.drop_counts == {"no_inference": 1}
    assert result.stage_counts["orphan_rows"] == 2


def test_temporary_segment_dirs_are_never_read(log: LogBuilder, tmp_path: Path) -> None:
    log.inference("r").pairwise("r", "a", "b").commit()
    committed = log.log_dir / "partition=00000"
    half_written = LogBuilder(tmp_path / "other")
    half_written.inference("x", prompt="uncommitted").pairwise("x", "a", "b").commit()
    seg = next((tmp_path / "other" / "partition=00000").iterdir())
    seg.rename(committed / f".tmp-{seg.name}-crashed")
    assert [r["prompt"] for r in records(run(log.log_dir, tmp_path / "out"))] == ["What is the capital of France?"]


# --------------------------------------------------------------------------- filters
FILTER_CASES = [
    ({"since_ms": 5_000}, "filtered_time"),
    ({"until_ms": 5_000}, "filtered_time"),
    ({"source_types": ["human_annotator"]}, "filtered_source_type"),
    ({"keys": ["helpfulness"]}, "filtered_key"),
    ({"environments": ["prod"]}, "filtered_environment"),
    ({"users": ["u1"]}, "filtered_user"),
    ({"tags": ["beta"]}, "filtered_tag"),
    ({"models": ["m1"]}, "filtered_model"),
    ({"model_versions": ["v1"]}, "filtered_model_version"),
]


@pytest.mark.parametrize(("filters", "reason"), FILTER_CASES)
def test_each_filter_keeps_one_and_drops_one(
    log: LogBuilder, tmp_path: Path, filters: dict[str, Any], reason: str
) -> None:
    keep = {"ts": 9_000, "source": "HUMAN_ANNOTATOR", "key": "helpfulness"}
    drop = {"ts": 1_000, "source": "APP_USER", "key": "preference"}
    if "until_ms" in filters:
        keep, drop = {**keep, "ts": 1_000}, {**drop, "ts": 9_000}
    log.inference("keep", prompt="kept", candidates=[("a", "x", "m1", "v1"), ("b", "y", "m1", "v1")],
                  environment="prod", user_id="u1", tags=["beta", "x"])  # fmt: skip
    log.inference("drop", prompt="dropped", candidates=[("a", "x", "m1", "v1"), ("b", "y", "m2", "v2")],
                  environment="dev", user_id="u2", tags=["x"])  # fmt: skip
    log.pairwise("keep", "a", "b", **keep).pairwise("drop", "a", "b", **drop).commit()
    result = run(log.log_dir, tmp_path / "out", filters=filters)
    assert [r["prompt"] for r in records(result)] == ["kept"]
    assert result.drop_counts == {reason: 1}


# --------------------------------------------------------------------------- drops
def test_empty_identical_and_unknown_candidates_are_dropped(log: LogBuilder, tmp_path: Path) -> None:
    log.inference("empty", prompt="p1", candidates=[("a", "fine", "m", None), ("b", " \n", "m", None)])
    log.inference("same", prompt="p2", candidates=[("a", "twin", "m", None), ("b", "twin", "m", None)])
    log.inference("blank", prompt="  ", candidates=[("a", "x", "m", None), ("b", "y", "m", None)])
    log.inference("ok", prompt="p3")
    log.pairwise("empty", "a", "b").pairwise("same", "a", "b").pairwise("blank", "a", "b")
    log.pairwise("ok", "a", "zz")
    log.commit()
    result = run(log.log_dir, tmp_path / "out")
    assert result.pairs_total == 0
    assert result.drop_counts == {"unknown_candidate": 1, "empty": 2, "identical": 1}


@pytest.mark.parametrize(
    ("policy", "expected", "dropped"),
    [("majority", {("Paris.", "Lyon.")}, 1), ("latest", {("Lyon.", "Paris.")}, 2), ("drop", set(), 3)],
)
def test_contradictions_follow_the_policy(
    log: LogBuilder, tmp_path: Path, policy: str, expected: set[Any], dropped: int
) -> None:
    # Three requests with the same prompt and outputs: two say a > b, the latest says b > a.
    for i, (chosen, rejected) in enumerate([("a", "b"), ("a", "b"), ("b", "a")]):
        log.inference(f"r{i}").pairwise(f"r{i}", chosen, rejected, ts=1000 * (i + 1))
    log.commit()
    result = run(log.log_dir, tmp_path / "out", contradictions=policy)
    assert pairs(result) == expected
    assert result.drop_counts.get("contradictory", 0) == dropped
    assert result.drop_counts.get("duplicate", 0) == (1 if policy == "majority" else 0)


def test_exact_duplicates_collapse_to_the_latest(log: LogBuilder, tmp_path: Path) -> None:
    log.inference("r1").pairwise("r1", "a", "b", feedback_id="old", ts=1000)
    log.inference("r2").pairwise("r2", "a", "b", feedback_id="new", ts=2000)
    log.commit()
    result = run(log.log_dir, tmp_path / "out", include_ids=True)
    [row] = records(result)
    assert row["feedback_ids"] == ["new"] and row["request_id"] == "r2"
    assert result.drop_counts == {"duplicate": 1}


def test_another_system_prompt_is_another_prompt(log: LogBuilder, tmp_path: Path) -> None:
    log.inference("r1", system_prompt="Answer tersely.").pairwise("r1", "a", "b", ts=1000)
    log.inference("r2", system_prompt="Answer as a pirate.").pairwise("r2", "b", "a", ts=2000)
    log.commit()
    result = run(log.log_dir, tmp_path / "out", contradictions="drop")
    assert pairs(result) == {("Paris.", "Lyon."), ("Lyon.", "Paris.")}  # neither a duplicate nor a contradiction
    assert result.drop_counts == {}


# --------------------------------------------------------------------------- sampling
def test_cap_per_prompt_stratified_by_source(log: LogBuilder, tmp_path: Path) -> None:
    three("r", log)
    log.pairwise("r", "a", "b", source="APP_USER").pairwise("r", "a", "c", source="APP_USER")
    log.pairwise("r", "a", "d", source="APP_USER").pairwise("r", "b", "c", source="MODEL_JUDGE")
    log.commit()
    result = run(log.log_dir, tmp_path / "out", sampling={"max_pairs_per_prompt": 2, "stratify_by": "source"},
                 include_provenance=True)  # fmt: skip
    assert sorted(r["source_type"] for r in records(result)) == ["APP_USER", "MODEL_JUDGE"]
    assert result.drop_counts == {"cap_per_prompt": 2}
    again = run(log.log_dir, tmp_path / "again", sampling={"max_pairs_per_prompt": 2, "stratify_by": "source"},
                include_provenance=True)  # fmt: skip
    assert records(again) == records(result)


def test_balance_position_and_total_cap(log: LogBuilder, tmp_path: Path) -> None:
    for i in range(6):  # chosen shown first in 5 requests, second in 1
        log.inference(f"r{i}", prompt=f"p{i}", presented=["a", "b"])
        log.pairwise(f"r{i}", "a" if i else "b", "b" if i else "a")
    log.commit()
    balanced = run(log.log_dir, tmp_path / "bal", sampling={"balance_position": True})
    assert balanced.pairs_total == 2 and balanced.drop_counts == {"position_balance": 4}
    capped = run(log.log_dir, tmp_path / "cap", sampling={"max_pairs": 3})
    assert capped.pairs_total == 3 and capped.drop_counts == {"max_pairs": 3}


# --------------------------------------------------------------------------- formats
def test_every_format_writes_the_documented_record(log: LogBuilder, tmp_path: Path) -> None:
    log.inference("r", prompt="Sky colour?", system_prompt="Be brief.",
                  candidates=[("a", "Blue.", "m1", "v1"), ("b", "Green.", "m2", "v2")])  # fmt: skip
    log.pairwise("r", "a", "b").commit()
    result = run(log.log_dir, tmp_path / "out")
    system = {"role": "system", "content": "Be brief."}
    user = {"role": "user", "content": "Sky colour?"}
    blue, green = {"role": "assistant", "content": "Blue."}, {"role": "assistant", "content": "Green."}
    assert records(result, "trl") == [{"prompt": "Sky colour?", "chosen": "Blue.", "rejected": "Green."}]
    assert records(result, "trl_conversational") == [{"prompt": [system, user], "chosen": [blue], "rejected": [green]}]
    assert records(result, "openai") == [
        {"input": {"messages": [system, user], "tools": [], "parallel_tool_calls": True},
         "preferred_output": [blue], "non_preferred_output": [green]}
    ]  # fmt: skip
    assert records(result, "axolotl_chatml_intel") == [
        {"system": "Be brief.", "question": "Sky colour?", "chosen": "Blue.", "rejected": "Green."}
    ]
    assert records(result, "axolotl_chat_template") == [{"messages": [system, user], "chosen": blue, "rejected": green}]
    assert sorted(records(result, "trl_unpaired"), key=lambda r: r["completion"]) == [
        {"prompt": "Sky colour?", "completion": "Blue.", "label": True},
        {"prompt": "Sky colour?", "completion": "Green.", "label": False},
    ]


def test_chat_messages_are_kept_as_messages(log: LogBuilder, tmp_path: Path) -> None:
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
             {"role": "user", "content": "Sky colour?"}]  # fmt: skip
    reply = [{"role": "assistant", "content": "Blue."}]
    log.inference("r", prompt=None, messages=turns, candidates=[
        {"candidate_id": "a", "messages": [{"name": None, **m} for m in reply], "model_name": "m"},
        {"candidate_id": "b", "text": "Green.", "model_name": "m"},
    ])  # fmt: skip
    log.pairwise("r", "a", "b").commit()
    result = run(log.log_dir, tmp_path / "out", formats=["trl", "trl_conversational"])
    assert records(result, "trl_conversational") == [
        {"prompt": turns, "chosen": reply, "rejected": [{"role": "assistant", "content": "Green."}]}
    ]
    assert records(result, "trl") == [{"prompt": "Hi\n\nHello\n\nSky colour?", "chosen": "Blue.", "rejected": "Green."}]


def test_optional_columns(log: LogBuilder, tmp_path: Path) -> None:
    log.inference("r", candidates=[("a", "x", "m1", "v1"), ("b", "y", "m2", "v2")]).pairwise(
        "r", "a", "b", feedback_id="f1", source={"type": "HUMAN_ANNOTATOR", "source_id": "ann-1"}
    )
    log.commit()
    result = run(log.log_dir, tmp_path / "out", include_margin=True, include_ids=True, include_provenance=True)
    [row] = records(result, "trl")
    assert list(row)[:3] == ["prompt", "chosen", "rejected"]
    assert row["margin"] == 1.0 and row["feedback_ids"] == ["f1"] and row["request_id"] == "r"
    assert (row["chosen_id"], row["rejected_id"], row["chosen_model"], row["rejected_model_version"]) == (
        "a", "b", "m1", "v2",
    )  # fmt: skip
    assert row["source_type"] == "HUMAN_ANNOTATOR" and row["derivation"] == "pairwise"
    assert len(row["prompt_id"]) == 64 and len(row["pair_id"]) == 32
    [unpaired] = [r for r in records(result, "trl_unpaired") if r["label"]]
    assert unpaired["candidate_id"] == "a" and unpaired["model"] == "m1"


# --------------------------------------------------------------------------- margin: one scale
def test_margin_is_one_bounded_scale_across_derivations(log: LogBuilder, tmp_path: Path) -> None:
    for request_id in ("pw", "co", "st", "th"):
        log.inference(request_id, prompt=f"prompt {request_id}")
    log.pairwise("pw", "a", "b").correction("co", "b", "Paris is the capital.")
    three("rk", log).ranking("rk", ["a", "b", "c", "d"])
    stars = {"type": "CONTINUOUS", "min": 1.0, "max": 5.0}
    log.score("st", "a", 5.0, key="stars", config=stars).score("st", "b", 2.0, key="stars", config=stars)
    log.score("th", "a", 1).score("th", "b", 0)
    rm = {"type": "REWARD_MODEL", "model": "rm"}
    three("rm", log)  # raw reward-model scores, no declared range: gaps of 4.02, 4.021 and 0.001
    log.score("rm", "a", 2.5, key="reward", source=rm).score("rm", "b", -1.52, key="reward", source=rm)
    log.score("rm", "c", -1.521, key="reward", source=rm)
    log.commit()
    config = {"include_margin": True, "include_provenance": True, "formats": ["trl"]}
    full = run(log.log_dir, tmp_path / "full", **config)
    got = {(r["derivation"], r["prompt"], r["chosen"], r["rejected"]): r["margin"] for r in records(full)}
    assert got == {
        ("pairwise", "prompt pw", "Paris.", "Lyon."): 1.0,
        ("correction", "prompt co", "Paris is the capital.", "Lyon."): 1.0,
        # a ranking of four levels: the rank gap over 3
        ("ranking", "prompt rk", "Ark", "Brk"): 0.333333,
        ("ranking", "prompt rk", "Ark", "Crk"): 0.666667,
        ("ranking", "prompt rk", "Ark", "Drk"): 1.0,
        ("ranking", "prompt rk", "Brk", "Crk"): 0.333333,
        ("ranking", "prompt rk", "Brk", "Drk"): 0.666667,
        ("ranking", "prompt rk", "Crk", "Drk"): 0.333333,
        ("score", "prompt st", "Paris.", "Lyon."): 0.75,  # 3 of the 4 points of a declared 1-5 scale
        ("score", "prompt th", "Paris.", "Lyon."): 1.0,  # thumbs: 1 against 0, on [0, 1]
        ("score", "prompt rm", "Arm", "Brm"): round(math.tanh(4.02 / 2), 6),  # no range: a logit gap
        ("score", "prompt rm", "Arm", "Crm"): round(math.tanh(4.021 / 2), 6),
        ("score", "prompt rm", "Brm", "Crm"): round(math.tanh(0.001 / 2), 6),
    }
    assert all(0.0 < m <= 1.0 for m in got.values())
    half = run(log.log_dir, tmp_path / "half", margin_scale=0.5, **config)
    halved = {(r["derivation"], r["prompt"], r["chosen"], r["rejected"]): r["margin"] for r in records(half)}
    assert halved == pytest.approx({key: m * 0.5 for key, m in got.items()}, abs=1e-6)


def test_margin_scale_is_validated() -> None:
    from prefpair.compile import CompileConfigError

    for bad in (0, -1.0, 11.0, float("nan")):
        with pytest.raises(CompileConfigError) as caught:
            CompileConfig.parse({"margin_scale": bad})
        assert caught.value.field == "margin_scale"


def test_a_compile_config_error_is_a_config_error_with_its_field_and_reason() -> None:
    from prefpair.compile import CompileConfigError, CompileError
    from prefpair.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        CompileConfig.parse({"margin_scale": -1.0})
    error = caught.value
    assert isinstance(error, CompileConfigError) and isinstance(error, CompileError)
    assert error.field == "margin_scale" and error.reason and error.source is None
    assert str(error) == f"margin_scale: {error.reason}"


# --------------------------------------------------------------------------- openai: its own keys only
def test_openai_lines_have_exactly_the_documented_keys_and_the_rest_goes_to_a_meta_file(
    log: LogBuilder, tmp_path: Path
) -> None:
    for i in range(30):
        log.inference(
            f"r{i}", prompt=f"prompt {i}", candidates=[("a", f"good {i}", "m1", "v1"), ("b", f"bad {i}", "m2", "v1")]
        )
        log.pairwise(f"r{i}", "a", "b")
    log.commit()
    flags = {"include_margin": True, "include_ids": True, "include_provenance": True}
    result = run(log.log_dir, tmp_path / "out", formats=["openai", "trl"], splits={"train": 0.5, "test": 0.5}, **flags)
    assert set(result.per_format["openai"]) == {"train", "test"}
    manifest = json.loads(result.manifest.read_text())
    meta_of = {entry["path"]: entry.get("meta_of") for entry in manifest["files"]}
    for split, rows in result.per_format["openai"].items():
        lines = records_of(result.out_dir / "openai" / f"{split}.jsonl")
        meta = records_of(result.out_dir / "openai" / f"{split}.meta.jsonl")
        assert len(lines) == len(meta) == rows
        for number, (line, side) in enumerate(zip(lines, meta, strict=True), start=1):
            assert list(line) == ["input", "preferred_output", "non_preferred_output"]
            assert list(line["input"]) == ["messages", "tools", "parallel_tool_calls"]
            assert side["line"] == number
            i = side["request_id"][1:]  # the side line describes this very line
            assert line["input"]["messages"] == [{"role": "user", "content": f"prompt {i}"}]
            assert line["preferred_output"] == [{"role": "assistant", "content": f"good {i}"}]
            assert (side["chosen_id"], side["rejected_id"], side["margin"], side["derivation"]) == (
                "a",
                "b",
                1.0,
                "pairwise",
            )
        assert meta_of[f"openai/{split}.meta.jsonl"] == f"openai/{split}.jsonl"
    assert "openai/train.meta.jsonl" in (result.out_dir / "README.md").read_text()
    assert "margin" in records(result, "trl")[0]  # other formats keep their optional columns inline
    plain = run(log.log_dir, tmp_path / "plain", formats=["openai"])
    assert sorted(p.name for p in (plain.out_dir / "openai").iterdir()) == ["train.jsonl"]


def records_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- text prompts, roles
def test_text_formats_drop_or_fold_the_system_prompt_and_turns(log: LogBuilder, tmp_path: Path) -> None:
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
             {"role": "user", "content": "Sky colour?"}]  # fmt: skip
    log.inference("chat", prompt=None, messages=turns, system_prompt="Be brief.",
                  candidates=[("a", "Blue.", "m", None), ("b", "Green.", "m", None)])  # fmt: skip
    log.inference("plain", prompt="Grass colour?", candidates=[("a", "Green.", "m", None), ("b", "Red.", "m", None)])
    log.pairwise("chat", "a", "b").pairwise("plain", "a", "b").commit()
    formats = ["trl", "trl_unpaired"]
    dropped = run(log.log_dir, tmp_path / "drop", formats=formats)
    folded = run(log.log_dir, tmp_path / "fold", formats=formats, text_prompt="fold")
    transcript = "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello\n\nUser: Sky colour?\n\nAssistant:"
    for fmt in formats:
        assert {r["prompt"] for r in records(dropped, fmt)} == {"Hi\n\nHello\n\nSky colour?", "Grass colour?"}
        assert {r["prompt"] for r in records(folded, fmt)} == {transcript, "User: Grass colour?\n\nAssistant:"}
    assert "the system prompt is left out" in (dropped.out_dir / "README.md").read_text()
    assert "`text_prompt: fold`" in (folded.out_dir / "README.md").read_text()
    with pytest.raises(Exception, match="text_prompt"):
        CompileConfig.parse({"text_prompt": "template"})


def test_a_tool_role_leaves_the_pair_out_of_axolotl_chat_template_only(
    log: LogBuilder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    turns = [{"role": "user", "content": "Weather in Paris?"}, {"role": "tool", "content": '{"temp": 21}'}]
    log.inference(
        "with-tool", prompt=None, messages=turns, candidates=[("a", "21 C.", "m", None), ("b", "Cold.", "m", None)]
    )
    log.inference("plain", prompt="Sky colour?", candidates=[("a", "Blue.", "m", None), ("b", "Green.", "m", None)])
    log.pairwise("with-tool", "a", "b").pairwise("plain", "a", "b").commit()
    with caplog.at_level("WARNING", logger="prefpair.compile.job"):
        result = run(log.log_dir, tmp_path / "out", formats=["trl_conversational", "axolotl_chat_template"])
    assert [r["messages"][-1]["content"] for r in records(result, "axolotl_chat_template")] == ["Sky colour?"]
    assert len(records(result, "trl_conversational")) == 2
    assert result.per_format == {"trl_conversational": {"train": 2}, "axolotl_chat_template": {"train": 1}}
    manifest = json.loads(result.manifest.read_text())
    assert manifest["counts"]["format_skips"] == {"axolotl_chat_template": {"unsupported_role": 1}}
    assert [e["rows"] for e in manifest["files"] if e["path"].startswith("axolotl")] == [1]
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "request with-tool" in warning and "messages[1].role = 'tool'" in warning
    assert "left out here: 1 (unsupported_role)" in (result.out_dir / "README.md").read_text()
