"""Implicit pairs on hand-built logs: each rule on request chains (regenerate, edit, copy, select,
conversion, dwell) with the exact pairs expected, the cross-request join's edge cases (parent
missing, parent deleted, signal before its inference), the rules file, and the manifest's counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prefpair.compile import CompileConfig, CompileResult, compile_dataset
from prefpair.compile.exceptions import CompileConfigError
from prefpair.compile.implicit import rules_of as load_rules
from prefpair.simulate import LogBuilder

Pair = tuple[str, str, str, str, float]
"""(prompt, chosen, rejected, source_type, margin)."""


def compiled(log_dir: Path, out: Path, **config: Any) -> tuple[CompileResult, set[Pair], dict[str, Any]]:
    config = {"splits": {"train": 1.0}, "formats": ["trl"], "include_margin": True, "include_provenance": True,
              **config}  # fmt: skip
    result = compile_dataset(log_dir, out, CompileConfig.parse(config))
    rows = [json.loads(line) for path in sorted((out / "trl").glob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines()]  # fmt: skip
    found = {(r["prompt"], r["chosen"], r["rejected"], r["source_type"], r["margin"]) for r in rows}
    return result, found, json.loads(result.manifest.read_text(encoding="utf-8"))


def one(log: LogBuilder, request_id: str, text: str, **kw: Any) -> LogBuilder:
    return log.inference(request_id, prompt=f"prompt {request_id}", candidates=[("x", text, "m1", "v1")], **kw)


def three(log: LogBuilder, request_id: str, **kw: Any) -> LogBuilder:
    return log.inference(request_id, prompt=f"prompt {request_id}",
                         candidates=[(c, f"{c.upper()}{request_id}", "m1", "v1") for c in "abc"], **kw)  # fmt: skip


@pytest.fixture
def log(tmp_path: Path) -> LogBuilder:
    return LogBuilder(tmp_path / "log")


def test_same_request_rules_give_exactly_their_pairs(log: LogBuilder, tmp_path: Path) -> None:
    three(log, "copy").signal("copy", "copy", "b")
    three(log, "select").signal("select", "select", "c")
    three(log, "conv").signal("conv", "conversion", "a", value=20.0)
    three(log, "edit").signal("edit", "edit", "a", text="my own answer")
    three(log, "dwell").signal("dwell", "dwell", "a", dwell_ms=30_000).signal("dwell", "dwell", "b", dwell_ms=1_000)
    log.signal("dwell", "dwell", "c", dwell_ms=8_000)  # neither long nor short: no pair either way
    three(log, "quiet").signal("quiet", "abandon").signal("quiet", "dwell", "a", dwell_ms=30_000)
    log.commit()
    _, found, manifest = compiled(log.log_dir, tmp_path / "out")
    assert found == {
        ("prompt copy", "Bcopy", "Acopy", "IMPLICIT:copy", 0.6),
        ("prompt copy", "Bcopy", "Ccopy", "IMPLICIT:copy", 0.6),
        ("prompt select", "Cselect", "Aselect", "IMPLICIT:select", 0.8),
        ("prompt select", "Cselect", "Bselect", "IMPLICIT:select", 0.8),
        ("prompt conv", "Aconv", "Bconv", "IMPLICIT:conversion", 0.8),
        ("prompt conv", "Aconv", "Cconv", "IMPLICIT:conversion", 0.8),
        ("prompt edit", "my own answer", "Aedit", "IMPLICIT:edit", 0.9),
        ("prompt dwell", "Adwell", "Bdwell", "IMPLICIT:dwell", 0.55),
    }
    per_rule = manifest["implicit"]["per_rule"]
    assert {name: entry["pairs"] for name, entry in per_rule.items()} == {
        "regenerate": 0, "edit": 1, "copy": 2, "select": 2, "conversion": 2, "dwell": 1}  # fmt: skip
    assert manifest["implicit"]["signals"] == {"abandon": 1, "conversion": 1, "copy": 1, "dwell": 4, "edit": 1,
                                               "select": 1}  # fmt: skip


def test_regeneration_chains_and_their_edge_cases(log: LogBuilder, tmp_path: Path) -> None:
    # kept: the child's only output, neither regenerated again nor abandoned
    one(log, "p1", "first try").inference("c1", prompt="prompt p1", candidates=[("y", "second try", "m2", "v1")],
                                          parent_request_id="p1")  # fmt: skip
    # regenerated twice: only the last one was kept; the middle one loses to it and beats nothing
    one(log, "p2", "draft 1")
    one(log, "c2", "draft 2", parent_request_id="p2")
    one(log, "c2b", "draft 3", parent_request_id="c2")
    # a child with two outputs: the copied one is the kept one; the parent's named candidate loses
    three(log, "p3").signal("p3", "regenerate", "b")
    log.inference("c3", prompt="prompt p3", candidates=[("u", "U3", "m1", "v1"), ("v", "V3", "m1", "v1")],
                  parent_request_id="p3").signal("c3", "copy", "v")  # fmt: skip
    # parent missing: never logged
    one(log, "c4", "orphan child", parent_request_id="ghost")
    # parent deleted by the user: no pair from the chain
    one(log, "p5", "deleted parent").signal("p5", "delete")
    one(log, "c5", "child of deleted", parent_request_id="p5")
    # child abandoned: not kept
    one(log, "p6", "six").inference("c6", prompt="prompt p6", candidates=[("x", "six again", "m1", "v1")],
                                    parent_request_id="p6").signal("c6", "abandon")  # fmt: skip
    log.commit()
    _, found, manifest = compiled(log.log_dir, tmp_path / "out")
    assert found == {
        ("prompt p1", "second try", "first try", "IMPLICIT:regenerate", 0.7),
        ("prompt c2", "draft 3", "draft 2", "IMPLICIT:regenerate", 0.7),
        ("prompt p3", "V3", "Bp3", "IMPLICIT:regenerate", 0.7),
        ("prompt p3", "V3", "U3", "IMPLICIT:copy", 0.6),  # c3 asked the same prompt
    }
    regenerate = manifest["implicit"]["per_rule"]["regenerate"]
    assert regenerate["judgments"] == 3 and regenerate["pairs"] == 3
    assert regenerate["not_derived"] == {"parent_missing": 1, "deleted": 1, "not_kept": 2}


def test_signals_and_children_that_land_before_their_parent_still_pair(log: LogBuilder, tmp_path: Path) -> None:
    log.signal("late", "copy", "a", ts=1_000).signal("never", "copy", "a", ts=1_001)
    one(log, "kid", "regenerated", parent_request_id="late-parent", ts=1_002)
    log.commit()  # the signals and the child, in a segment before the inferences they refer to
    three(log, "late", ts=5_000)
    one(log, "late-parent", "original", ts=5_001)
    log.commit()
    _, found, manifest = compiled(log.log_dir, tmp_path / "out")
    assert found == {
        ("prompt late", "Alate", "Blate", "IMPLICIT:copy", 0.6),
        ("prompt late", "Alate", "Clate", "IMPLICIT:copy", 0.6),
        ("prompt late-parent", "regenerated", "original", "IMPLICIT:regenerate", 0.7),
    }
    assert manifest["implicit"]["per_rule"]["copy"]["not_derived"] == {"no_inference": 1}


def test_implicit_pairs_mix_with_explicit_ones_or_stay_apart(log: LogBuilder, tmp_path: Path) -> None:
    three(log, "r").pairwise("r", "a", "c", source="HUMAN_ANNOTATOR").signal("r", "copy", "b")
    log.commit()
    explicit = ("prompt r", "Ar", "Cr", "HUMAN_ANNOTATOR", 1.0)
    implicit = {("prompt r", "Br", "Ar", "IMPLICIT:copy", 0.6), ("prompt r", "Br", "Cr", "IMPLICIT:copy", 0.6)}
    assert compiled(log.log_dir, tmp_path / "mixed")[1] == {explicit, *implicit}
    assert compiled(log.log_dir, tmp_path / "apart", implicit="exclude")[1] == {explicit}
    result, found, manifest = compiled(log.log_dir, tmp_path / "only", implicit="only", margin_scale=0.5)
    assert found == {(p, c, r, s, m / 2) for p, c, r, s, m in implicit}
    assert result.drop_counts["explicit_left_out"] == 1
    assert manifest["implicit"]["mode"] == "only"
    one_rule = compiled(log.log_dir, tmp_path / "one", filters={"source_types": ["implicit:COPY", "human_annotator"]})
    assert one_rule[1] == {explicit, *implicit}
    assert compiled(log.log_dir, tmp_path / "none", filters={"source_types": ["IMPLICIT:edit"]})[1] == set()


def test_a_rules_file_chooses_rules_confidences_and_thresholds(log: LogBuilder, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rules]]\nname = "long_read"\nkind = "dwell"\nconfidence = 0.3\nmin_dwell_ms = 5000\n'
        'max_other_dwell_ms = 2000\n\n[[rules]]\nname = "big_sale"\nkind = "conversion"\nconfidence = 1.0\n'
        "min_value = 100\n",
        encoding="utf-8",
    )
    three(log, "r").signal("r", "dwell", "a", dwell_ms=6_000).signal("r", "dwell", "b", dwell_ms=100)
    log.signal("r", "copy", "c").signal("r", "conversion", "b", value=50)
    three(log, "s").signal("s", "conversion", "c", value=150)
    log.commit()
    _, found, manifest = compiled(log.log_dir, tmp_path / "out", implicit_rules=str(rules))
    assert found == {
        ("prompt r", "Ar", "Br", "IMPLICIT:long_read", 0.3),
        ("prompt s", "Cs", "As", "IMPLICIT:big_sale", 1.0),
        ("prompt s", "Cs", "Bs", "IMPLICIT:big_sale", 1.0),
    }
    assert manifest["implicit"]["rules"] == {"long_read": {"kind": "dwell", "confidence": 0.3},
                                             "big_sale": {"kind": "conversion", "confidence": 1.0}}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ('[[rules]]\nname = "x"\nkind = "copy"\nconfidence = 1.5\n', "rules.0.confidence", "less than or equal"),
        ('[[rules]]\nname = "x"\nkind = "dwell"\nconfidence = 0.5\n', "rules.0", "min_dwell_ms"),
        ('[[rules]]\nname = "x"\nkind = "smile"\nconfidence = 0.5\n', "rules.0.kind", "Input should be"),
        ("rules = [", "implicit_rules", "not TOML"),
    ],
)
def test_a_bad_rules_file_names_the_field(tmp_path: Path, text: str, field: str, reason: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CompileConfigError) as error:
        load_rules(path)
    assert field in error.value.field and reason in error.value.reason and str(path) in str(error.value)


def test_the_shipped_rules_load() -> None:
    names = [rule.name for rule in load_rules(None).rules]
    assert names == ["regenerate", "edit", "copy", "select", "conversion", "dwell"]
