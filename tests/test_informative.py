"""Informative sampling strategies on planted logs: what each keeps, that the manifest says so, and
that the same log and seed give the same files (another seed: another draw)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from prefpair.compile import CompileConfig, compile_dataset
from prefpair.compile.exceptions import CompileConfigError
from prefpair.simulate import LogBuilder


def compiled(log_dir: Path, out: Path, **sampling: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    seed = sampling.pop("seed", 0)
    config = CompileConfig.parse({"splits": {"train": 1.0}, "formats": ["trl"], "include_margin": True,
                                  "include_ids": True, "include_provenance": True, "seed": seed,
                                  "sampling": sampling})  # fmt: skip
    result = compile_dataset(log_dir, out, config)
    rows = [json.loads(line) for line in (out / "trl" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    return rows, json.loads(result.manifest.read_text(encoding="utf-8"))


def test_uncertain_keeps_the_smallest_margins(tmp_path: Path) -> None:
    log = LogBuilder(tmp_path / "log")
    for i, gap in enumerate([0.9, 0.05, 0.5, 0.1, 0.7, 0.3]):
        log.inference(f"r{i}", prompt=f"p{i}")
        log.score(f"r{i}", "a", 0.5 + gap / 2, key="reward", source="REWARD_MODEL")
        log.score(f"r{i}", "b", 0.5 - gap / 2, key="reward", source="REWARD_MODEL")
    log.inference("human", prompt="p-human").pairwise("human", "a", "b", source="HUMAN_ANNOTATOR")
    log.commit()
    rows, manifest = compiled(log.log_dir, tmp_path / "out", strategy="uncertain", strategy_pairs=3)
    assert sorted(r["request_id"] for r in rows) == ["r1", "r3", "r5"]  # gaps 0.05, 0.1, 0.3
    section = manifest["sampling_strategy"]
    assert (section["strategy"], section["pairs_before"], section["pairs_after"]) == ("uncertain", 7, 3)
    assert section["after"]["mean_margin"] < section["before"]["mean_margin"]
    assert manifest["counts"]["drops"]["not_informative"] == 4


def test_disagreement_keeps_pairs_sources_judged_both_ways(tmp_path: Path) -> None:
    log = LogBuilder(tmp_path / "log")
    log.inference("contested", prompt="p-contested")
    log.pairwise("contested", "a", "b", source="HUMAN_ANNOTATOR").pairwise("contested", "a", "b", source="APP_USER")
    log.pairwise("contested", "b", "a", source="MODEL_JUDGE")
    for i in range(5):
        log.inference(f"calm{i}", prompt=f"p-calm{i}").pairwise(f"calm{i}", "a", "b", source="HUMAN_ANNOTATOR")
    log.commit()
    rows, manifest = compiled(log.log_dir, tmp_path / "out", strategy="disagreement", strategy_pairs=2)
    kept = sorted(r["request_id"] for r in rows)
    assert "contested" in kept and len(kept) == 2
    contested = next(r for r in rows if r["request_id"] == "contested")
    assert contested["chosen"] == "Paris."  # the majority's side (a)
    assert manifest["sampling_strategy"]["pairs_after"] == 2


def test_coverage_keeps_every_model_pair_and_prompt_cluster(tmp_path: Path) -> None:
    log = LogBuilder(tmp_path / "log")
    rng = random.Random(3)
    for i in range(30):  # a common model pair and one kind of prompt
        log.inference(f"common{i}", prompt=f"Summarize the item number {i}",
                      candidates=[("a", f"A{i}", "big", "v1"), ("b", f"B{i}", "small", "v1")])
        log.pairwise(f"common{i}", *rng.sample("ab", 2), source="HUMAN_ANNOTATOR")
    log.inference("rare-models", prompt="Summarize the item number 99",
                  candidates=[("a", "Ar", "big", "v1"), ("b", "Br", "tiny", "v1")]).pairwise("rare-models", "a", "b")
    log.inference("rare-prompt", prompt="Translate this poem please",
                  candidates=[("a", "At", "big", "v1"), ("b", "Bt", "small", "v1")]).pairwise("rare-prompt", "b", "a")
    log.commit()  # fmt: skip
    rows, manifest = compiled(log.log_dir, tmp_path / "out", strategy="coverage", strategy_pairs=4)
    kept = {r["request_id"] for r in rows}
    assert {"rare-models", "rare-prompt"} <= kept and len(kept) == 4
    section = manifest["sampling_strategy"]
    assert section["before"]["model_pairs"] == section["after"]["model_pairs"] == 2


def _position_biased_log(log_dir: Path, n: int = 400, first_share: float = 0.8) -> None:
    """APP_USER picks the output shown first 80% of the time whatever it is; annotators have no bias."""
    log = LogBuilder(log_dir)
    rng = random.Random(11)
    for i in range(n):
        order = rng.sample(["a", "b"], 2)
        log.inference(f"u{i}", prompt=f"user prompt {i}", candidates=[("a", f"A{i}", "m1", "v1"),
                                                                      ("b", f"B{i}", "m2", "v1")], presented=order)
        chosen = order[0] if rng.random() < first_share else order[1]
        log.pairwise(f"u{i}", chosen, "b" if chosen == "a" else "a", source="APP_USER")
    for i in range(50):
        log.inference(f"h{i}", prompt=f"annotated prompt {i}")  # no presentation order: unknown position
        log.pairwise(f"h{i}", "a", "b", source="HUMAN_ANNOTATOR")
    log.commit()  # fmt: skip


def test_ipw_removes_the_position_bias_and_is_deterministic(tmp_path: Path) -> None:
    _position_biased_log(tmp_path / "log")
    rows, manifest = compiled(tmp_path / "log", tmp_path / "out", strategy="ipw")
    section = manifest["sampling_strategy"]
    assert section["propensity"]["APP_USER"]["pairs"] == 400
    assert 0.74 < section["propensity"]["APP_USER"]["p_chosen_shown_first"] < 0.86
    assert section["before"]["share_chosen_shown_first"] > 0.74
    assert 0.42 < section["after"]["share_chosen_shown_first"] < 0.58
    assert sum(r["source_type"] == "HUMAN_ANNOTATOR" for r in rows) == 50  # unknown position: all kept
    assert manifest["counts"]["drops"]["ipw_resampled"] == section["pairs_before"] - section["pairs_after"] > 150
    compiled(tmp_path / "log", tmp_path / "again", strategy="ipw")
    first, second = (tmp_path / run / "trl" / "train.jsonl" for run in ("out", "again"))
    assert first.read_bytes() == second.read_bytes()
    other, _ = compiled(tmp_path / "log", tmp_path / "other", strategy="ipw", seed=1)
    assert {r["pair_id"] for r in other} != {r["pair_id"] for r in rows}


@pytest.mark.parametrize(("sampling", "reason"), [
    ({"strategy": "uncertain"}, "needs strategy_pairs"),
    ({"strategy": "ipw", "strategy_pairs": 3}, "applies to the uncertain"),
])  # fmt: skip
def test_strategy_options_are_checked(sampling: dict[str, Any], reason: str) -> None:
    with pytest.raises(CompileConfigError) as error:
        CompileConfig.parse({"sampling": sampling})
    assert reason in str(error.value)
