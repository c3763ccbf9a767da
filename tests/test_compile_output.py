"""The compiler's output: trainers can load it, it is reproducible, leak-free, incremental, locked, atomic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prefpair.compile import (
    FORMATS,
    CompileConfig,
    CompileConfigError,
    NoCommittedLogError,
    OutputDirError,
    OutputLockedError,
    compile_dataset,
)
from prefpair.compile import job as compile_job
from prefpair.compile.output import lock_path, output_lock
from prefpair.simulate import LogBuilder, Traffic, TrafficSpec, write_log

EXPECTED_COLUMNS = {
    "trl": {"prompt": "string", "chosen": "string", "rejected": "string"},
    "trl_conversational": {"prompt": "messages", "chosen": "messages", "rejected": "messages"},
    "trl_unpaired": {"prompt": "string", "completion": "string", "label": "bool"},
    "openai": {"input": "input", "preferred_output": "messages", "non_preferred_output": "messages"},
    "axolotl_chatml_intel": {"system": "string", "question": "string", "chosen": "string", "rejected": "string"},
    "axolotl_chat_template": {"messages": "messages", "chosen": "message", "rejected": "message"},
}


def build_requests(log: LogBuilder, n: int, start: int = 0, prompts: int | None = None) -> None:
    """``n`` requests (prompt ids cycle over ``prompts`` distinct prompts) with a preference each."""
    for i in range(start, start + n):
        p = i % prompts if prompts else i
        log.inference(f"r{i}", prompt=f"prompt {p}", system_prompt="Be kind." if i % 2 else None,
                      candidates=[("a", f"good {i}", "m1", "v1"), ("b", f"bad {i}", "m2", "v1")])  # fmt: skip
        log.pairwise(f"r{i}", "a", "b")
        if i % 3 == 0:
            log.score(f"r{i}", "a", 1.0, config={"type": "CONTINUOUS", "min": 0.0, "max": 1.0})


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- trainers load it
def _kind(feature: Any) -> str:
    from datasets import Value

    if isinstance(feature, Value):
        return str(feature.dtype)
    if isinstance(feature, list) or hasattr(feature, "feature"):
        inner = feature[0] if isinstance(feature, list) else feature.feature
        if isinstance(inner, dict) and set(inner) == {"role", "content"}:
            return "messages"
    if isinstance(feature, dict):
        if set(feature) == {"role", "content"}:
            return "message"
        if set(feature) == {"messages", "tools", "parallel_tool_calls"} and _kind(feature["messages"]) == "messages":
            return "input"
    return repr(feature)


@pytest.fixture
def offline_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hugging Face ``datasets`` reads only what the test gives it, with its caches under ``tmp_path``."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def committed_log(log_dir: Path, requests: int = 40) -> LogBuilder:
    """A log of ``requests`` requests (see :func:`build_requests`), committed as one segment."""
    log = LogBuilder(log_dir)
    build_requests(log, requests)
    log.commit()
    return log


@pytest.mark.usefixtures("offline_datasets")
def test_every_format_loads_with_hugging_face_datasets(tmp_path: Path) -> None:
    from datasets import load_dataset

    log = committed_log(tmp_path / "log")
    result = compile_dataset(log.log_dir, tmp_path / "out", CompileConfig(seed=1))
    assert set(result.per_format) == set(FORMATS)
    for fmt, columns in EXPECTED_COLUMNS.items():
        data_files = {split: str(result.out_dir / fmt / f"{split}.jsonl") for split in result.per_format[fmt]}
        ds = load_dataset("json", data_files=data_files, cache_dir=str(tmp_path / "hf-cache"))
        for split, rows in result.per_format[fmt].items():
            assert ds[split].num_rows == rows
            assert {name: _kind(f) for name, f in ds[split].features.items()} == columns, fmt
        # the dataset card's YAML configs and features load the same data
        from_card = load_dataset(str(result.out_dir), fmt, cache_dir=str(tmp_path / "hf-cache"))
        assert {s: d.num_rows for s, d in from_card.items()} == result.per_format[fmt]


def test_manifest_and_card(tmp_path: Path) -> None:
    log = LogBuilder(tmp_path / "log", partition=2)
    build_requests(log, 10)
    log.commit()
    result = compile_dataset(log.log_dir, tmp_path / "out", CompileConfig(formats=("trl",), seed=3))
    manifest = json.loads(result.manifest.read_text())
    assert manifest["inputs"]["partitions"]["2"]["feedback_end"] == 14
    assert manifest["inputs"]["partitions"]["2"]["inference_end"] == 10
    assert manifest["seed"] == 3 and manifest["config"]["formats"] == ["trl"]
    assert sum(manifest["counts"]["splits"].values()) == result.pairs_total == 10
    import hashlib

    for entry in manifest["files"]:
        assert hashlib.sha256((result.out_dir / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    card = (result.out_dir / "README.md").read_text()
    assert card.startswith("---\n") and "config_name: trl" in card and "path: trl/train.jsonl" in card


def test_card_title_and_license(tmp_path: Path) -> None:
    import yaml

    log = LogBuilder(tmp_path / "log")
    build_requests(log, 10)
    log.commit()

    def header(config: CompileConfig, folder: str) -> dict[str, Any]:
        card = (compile_dataset(log.log_dir, tmp_path / folder, config).out_dir / "README.md").read_text()
        meta: dict[str, Any] = yaml.safe_load(card.split("---\n")[1])
        assert f"\n# {meta['pretty_name']}\n" in card
        return meta

    plain = header(CompileConfig(formats=("trl",)), "my-folder")
    assert plain["pretty_name"] == "Preference pairs on m1, m2 (app user feedback)"  # the data's, not the folder's
    assert plain["license"] == "unknown" and "license_name" not in plain and "license_link" not in plain
    card = {"pretty_name": "Support chat preferences", "license": "other", "license_name": "acme-data-1.0",
            "license_link": "https://example.com/acme-data-1.0"}  # fmt: skip
    other = header(CompileConfig.parse({"formats": ["trl"], "card": card}), "other")
    assert {k: other[k] for k in card} == card
    spdx = header(CompileConfig.parse({"formats": ["trl"], "card": {"license": "Apache-2.0"}}), "spdx")
    assert spdx["license"] == "apache-2.0"
    for bad, field in (
        ({"license": "other"}, "card.license_name"),
        ({"license": "other", "license_name": "acme-1.0"}, "card.license_link"),
        ({"license": "other", "license_name": "Acme License", "license_link": "LICENSE.md"}, "card.license_name"),
        ({"license": "other", "license_name": "acme", "license_link": "../LICENSE"}, "card.license_link"),
        ({"license": "mit", "license_link": "https://example.com"}, "card.license_link"),
        ({"license": "MIT License"}, "card.license"),
        ({"pretty_name": ""}, "card.pretty_name"),
    ):
        with pytest.raises(CompileConfigError) as caught:
            CompileConfig.parse({"card": bad})
        assert caught.value.field == field, bad


@pytest.mark.usefixtures("offline_datasets")
def test_card_loading_snippet_runs_from_the_card_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = committed_log(tmp_path / "log")
    config = CompileConfig(formats=("openai", "axolotl_chatml_intel"), include_ids=True, seed=2)
    result = compile_dataset(log.log_dir, tmp_path / "out", config)
    card = (result.out_dir / "README.md").read_text()
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    assert "openai/train.jsonl" in snippet and "meta" not in snippet
    monkeypatch.chdir(result.out_dir)  # the folder holding the card, as the snippet says
    scope: dict[str, Any] = {}
    exec(compile(snippet, "README.md snippet", "exec"), scope)  # the card's own code, as a reader runs it
    for loaded in (scope["ds"], scope["by_config"]):
        assert {split: d.num_rows for split, d in loaded.items()} == result.per_format["openai"]
        assert set(loaded["train"].column_names) == {"input", "preferred_output", "non_preferred_output"}


# --------------------------------------------------------------------------- reproducible, leak-free
def test_same_inputs_and_seed_give_byte_identical_output(tmp_path: Path) -> None:
    write_log(Traffic(TrafficSpec(requests=1500, seed=5)), tmp_path / "log")
    config = CompileConfig(seed=11, include_ids=True, include_provenance=True, include_margin=True,
                           sampling={"max_pairs_per_prompt": 1, "stratify_by": "model", "balance_position": True},
                           splits={"train": 0.8, "validation": 0.1, "test": 0.1})  # fmt: skip
    first = compile_dataset(tmp_path / "log", tmp_path / "out", config)
    before = {p.relative_to(first.out_dir): p.read_bytes() for p in first.out_dir.rglob("*") if p.is_file()}
    assert len(before) == 2 + 3 * len(FORMATS) + 3  # card, manifest, three splits of each format, openai's meta
    second = compile_dataset(tmp_path / "log", tmp_path / "out", config)  # replaces the first
    after = {p.relative_to(second.out_dir): p.read_bytes() for p in second.out_dir.rglob("*") if p.is_file()}
    assert after == before
    other_seed = compile_dataset(tmp_path / "log", tmp_path / "other", config.model_copy(update={"seed": 12}))
    assert (other_seed.out_dir / "trl/train.jsonl").read_bytes() != before[Path("trl/train.jsonl")]


def test_no_prompt_lands_in_two_splits(tmp_path: Path) -> None:
    log = LogBuilder(tmp_path / "log")
    build_requests(log, 300, prompts=60)  # each prompt asked five times, with different outputs
    log.commit()
    result = compile_dataset(
        log.log_dir, tmp_path / "out", CompileConfig(splits={"train": 0.6, "validation": 0.2, "test": 0.2})
    )
    assert set(result.split_counts) == {"train", "validation", "test"} and all(result.split_counts.values())
    for fmt, key in (("trl", "prompt"), ("trl_unpaired", "prompt"), ("axolotl_chatml_intel", "question")):
        seen: dict[str, str] = {}
        for split in ("train", "validation", "test"):
            for row in lines(result.out_dir / fmt / f"{split}.jsonl"):
                assert seen.setdefault(row[key], split) == split, (fmt, row[key])
        assert len(seen) == 60


# --------------------------------------------------------------------------- incremental
def test_incremental_emits_nothing_twice_and_misses_nothing(tmp_path: Path) -> None:
    log = LogBuilder(tmp_path / "log")
    out = tmp_path / "out"
    config = CompileConfig(incremental=True, include_ids=True, formats=("trl", "trl_unpaired"))
    emitted: list[str] = []
    versions = []
    for run, (start, n) in enumerate([(0, 20), (20, 15), (35, 10)]):
        build_requests(log, n, start=start, prompts=25)
        if run == 1:
            log.pairwise("r3", "a", "b")  # a duplicate of an emitted pair: not emitted again
        log.commit()
        result = compile_dataset(log.log_dir, out, config)
        versions.append(result.out_dir.name)
        emitted += [row["pair_id"] for path in result.files if "trl/" in str(path) for row in lines(path)]
    assert versions == ["v00001", "v00002", "v00003"]
    assert len(emitted) == len(set(emitted)) == 45
    full = compile_dataset(log.log_dir, tmp_path / "full", CompileConfig(include_ids=True, formats=("trl",)))
    assert {row["pair_id"] for p in full.files for row in lines(p)} == set(emitted)
    state = json.loads((out / ".compile-state.json").read_text())
    assert [v["pairs"] for v in state["versions"]] == [20, 15, 10]
    empty = compile_dataset(log.log_dir, out, config)  # nothing new: an empty version, nothing repeated
    assert empty.pairs_total == 0 and empty.stage_counts["pairs_already_emitted"] == 45


# --------------------------------------------------------------------------- safe on a schedule
def test_lock_stops_a_second_run(tmp_path: Path) -> None:
    log = LogBuilder(tmp_path / "log")
    build_requests(log, 3)
    log.commit()
    with output_lock(tmp_path / "out"), pytest.raises(OutputLockedError) as caught:
        compile_dataset(log.log_dir, tmp_path / "out", CompileConfig())
    assert caught.value.lock_path == lock_path(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    compile_dataset(log.log_dir, tmp_path / "out", CompileConfig())  # released: runs


def test_failed_compile_leaves_the_previous_dataset_and_no_partial_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = LogBuilder(tmp_path / "log")
    build_requests(log, 5)
    log.commit()
    good = compile_dataset(log.log_dir, tmp_path / "out", CompileConfig(formats=("trl",)))
    before = {p: p.read_bytes() for p in good.out_dir.rglob("*") if p.is_file()}
    build_requests(log, 5, start=5)
    log.commit()

    def boom(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("disk full while writing the card")

    monkeypatch.setattr(compile_job, "render_card", boom)
    with pytest.raises(RuntimeError):
        compile_dataset(log.log_dir, tmp_path / "out", CompileConfig(formats=("trl",)))
    assert {p: p.read_bytes() for p in good.out_dir.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "log", "out"]


def test_bad_inputs_raise_compile_errors(tmp_path: Path) -> None:
    with pytest.raises(NoCommittedLogError):
        compile_dataset(tmp_path / "nothing", tmp_path / "out", CompileConfig())
    log = LogBuilder(tmp_path / "log")
    build_requests(log, 2)
    log.commit()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputDirError):
        compile_dataset(log.log_dir, tmp_path / "mine", CompileConfig())
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    compile_dataset(log.log_dir, tmp_path / "plain", CompileConfig())
    with pytest.raises(OutputDirError):
        compile_dataset(log.log_dir, tmp_path / "plain", CompileConfig(incremental=True))
    for bad in ({"splits": {"train": 0.5}}, {"formats": ["trl", "csv"]}, {"filters": {"source_types": ["cat"]}},
                {"filters": {"since_ms": 5, "until_ms": 5}}, {"memory_limit": "lots"}):  # fmt: skip
        with pytest.raises(CompileConfigError):
            CompileConfig.parse(bad)


def test_command_line(tmp_path: Path, run_cli: Any) -> None:
    home = tmp_path / "home"
    log = LogBuilder(home / "log")
    build_requests(log, 12)
    log.commit()
    done = run_cli(
        "compile", "--home", str(home), "--format", "trl,openai", "--split", "train=0.5", "--split", "test=0.5",
        "--source-type", "app_user", "--since", "2020-01-01", "--include-ids", "--include-margin",
        "--margin-scale", "0.5", "--text-prompt", "fold", "--pretty-name", "Kind answers", "--license", "mit",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "compiled 12 pairs" in done.stdout
    out = home / "datasets" / "preferences"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "manifest.json", "openai", "trl"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["filters"]["source_types"] == ["APP_USER"] and manifest["filters"]["since_ms"] == 1577836800000
    assert (manifest["config"]["margin_scale"], manifest["config"]["text_prompt"]) == (0.5, "fold")
    assert manifest["config"]["card"] == {"pretty_name": "Kind answers", "license": "mit", "license_name": None,
                                          "license_link": None}  # fmt: skip
    assert {row["margin"] for p in (out / "trl").glob("*.jsonl") for row in lines(p)} == {0.5}
    assert sorted(p.name for p in (out / "openai").iterdir()) == sorted(
        name for split in ("train", "test") for name in (f"{split}.jsonl", f"{split}.meta.jsonl")
    )
    refused = run_cli("compile", "--home", str(home), "--license", "other", "--license-name", "acme-1.0")
    assert refused.returncode == 2 and "card.license_link" in refused.stderr and "Traceback" not in refused.stderr
    failed = run_cli("compile", "--home", str(tmp_path / "empty"))
    assert failed.returncode == 2 and "no committed log" in failed.stderr and "Traceback" not in failed.stderr
    helped = run_cli("compile", "--help")
    assert "--max-pairs-per-prompt" in helped.stdout and "--incremental" in helped.stdout
    for documented in ("--margin-scale", "tanh(gap / 2)", "--text-prompt", "<split>.meta.jsonl", "`tool`",
                       "--license-link"):  # fmt: skip
        assert documented in helped.stdout


def test_simulated_log_compiles_and_counts_what_was_simulated(tmp_path: Path) -> None:
    written = write_log(Traffic(TrafficSpec(requests=1000, seed=1)), tmp_path / "log")
    result = compile_dataset(tmp_path / "log", tmp_path / "out", CompileConfig(formats=("trl",)))
    stages, drops, traffic = result.stage_counts, result.drop_counts, written.traffic
    assert stages["feedback_rows"] == written.feedback_rows == traffic.feedback_events - traffic.lost_inferences
    assert stages["orphan_rows"] == written.orphan_rows == traffic.lost_inferences
    assert stages["feedback_ids"] == traffic.feedback  # one id per judgment; updates and deletes reuse it
    assert drops["deleted"] == traffic.deletes and drops["no_inference"] == traffic.lost_inferences
    assert {"pairs_pairwise", "pairs_ranking", "pairs_score", "pairs_correction"} <= set(stages)
    assert {"tie", "both_bad", "contradictory", "duplicate"} <= set(drops)  # sources disagree and repeat
    assert 0.5 * stages["judgments_live"] < result.pairs_total == stages["pairs_written"]
