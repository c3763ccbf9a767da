"""Datasets and reports on S3 (the session's real S3 server): the same bytes as on a local disk,
published so that readers see a whole dataset or the one before, never a part of one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from s3_support import S3Endpoint

from prefpair.compile import CompileConfig, OutputDirError, compile_dataset
from prefpair.compile import output as compile_output
from prefpair.compile.exceptions import PublishConflictError
from prefpair.dataset_layout import MANIFEST
from prefpair.report import ReportConfig, ReportInputError, build_report
from prefpair.simulate import LogBuilder
from prefpair.storage import S3Storage, Storage

CONFIG = CompileConfig(
    seed=3, include_ids=True, include_provenance=True, include_margin=True,
    splits={"train": 0.6, "validation": 0.2, "test": 0.2},
)  # fmt: skip


def build_log(log_dir: Path, start: int, n: int, partitions: int = 2) -> None:
    """``n`` requests from ``start`` spread over partitions, one new segment per partition."""
    builders = [LogBuilder(log_dir, partition=p) for p in range(partitions)]
    for i in range(start, start + n):
        log = builders[i % partitions]
        log.inference(f"r{i}", prompt=f"prompt {i % 17}", system_prompt="Be brief." if i % 2 else None,
                      candidates=[("a", f"good {i}", "m1", "v1"), ("b", f"bad {i}", "m2", "v1"),
                                  ("c", f"odd {i}", "m3", "v2")])  # fmt: skip
        log.pairwise(f"r{i}", "a", "b")
        if i % 3 == 0:
            log.ranking(f"r{i}", ["c", "a", "b"])
        if i % 4 == 0:
            log.score(f"r{i}", "b", 0.0, config={"type": "CONTINUOUS", "min": 0.0, "max": 1.0})
            log.score(f"r{i}", "c", 1.0, config={"type": "CONTINUOUS", "min": 0.0, "max": 1.0})
    for log in builders:
        log.commit()


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def stored_files(folder: Storage) -> dict[str, bytes]:
    return {relative: (folder / relative).read_bytes() for relative in folder.list_files()}


def without_log_dir(manifest: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(manifest)
    data["inputs"].pop("log_dir")
    return data


def assert_same_dataset(stored: dict[str, bytes], local: dict[str, bytes], *, same_log: bool) -> None:
    assert sorted(stored) == sorted(local)
    for relative, content in local.items():
        if relative == MANIFEST and not same_log:  # it names the log it read
            assert without_log_dir(stored[relative]) == without_log_dir(content)
        else:
            assert stored[relative] == content, relative


# --------------------------------------------------------------------------- same bytes
def test_compile_to_s3_from_a_local_or_an_s3_log_writes_the_local_bytes(tmp_path: Path, s3_root: S3Storage) -> None:
    log_dir = tmp_path / "log"
    build_log(log_dir, 0, 60)
    reference = compile_dataset(log_dir, tmp_path / "prefs", CONFIG)
    expected = local_files(reference.out_dir)
    assert reference.pairs_total > 0 and "trl/train.jsonl" in expected and ".emitted.parquet" not in expected

    from_local = compile_dataset(log_dir, s3_root / "prefs", CONFIG)
    assert isinstance(from_local.out_dir, S3Storage)
    assert_same_dataset(stored_files(from_local.out_dir), expected, same_log=True)
    assert from_local.manifest == from_local.out_dir / "manifest.json"
    assert [f.url for f in from_local.files] == [(from_local.out_dir / str(p.relative_to(reference.out_dir))).url
                                                 for p in reference.files]  # fmt: skip
    assert (from_local.pairs_total, from_local.split_counts) == (reference.pairs_total, reference.split_counts)

    log = s3_root / "log"
    log.upload_tree(log_dir)
    from_s3 = compile_dataset(log, s3_root / "from-s3" / "prefs", CONFIG)
    assert_same_dataset(stored_files(from_s3.out_dir), expected, same_log=False)
    assert json.loads((from_s3.manifest).read_bytes())["inputs"]["log_dir"] == log.url

    # a local output from the S3 log, through the local rename path
    local_from_s3 = compile_dataset(log, tmp_path / "again" / "prefs", CONFIG)
    assert_same_dataset(local_files(local_from_s3.out_dir), expected, same_log=False)


def test_publishing_again_gives_the_same_bytes_and_keeps_one_dataset_back(tmp_path: Path, s3_root: S3Storage) -> None:
    log_dir = tmp_path / "log"
    build_log(log_dir, 0, 30)
    out = s3_root / "prefs"
    results = [compile_dataset(log_dir, out, CONFIG) for _ in range(3)]
    contents = [stored_files(results[-1].out_dir), stored_files(results[-2].out_dir)]
    assert contents[0] == contents[1]  # deterministic: same log, same seed
    assert [p.number for p in compile_output.published(out)] == [1, 2, 3]  # pointers are kept
    latest = compile_output.latest_publication(out)
    assert latest is not None and out / latest.path == results[-1].out_dir
    kept = {key.split("/")[0] for key in (out / compile_output.DATA).list_files()}
    assert kept == {r.out_dir.name for r in results[1:]}  # the oldest dataset is gone
    assert results[0].out_dir.list_files() == {}


# --------------------------------------------------------------------------- incremental
def test_incremental_versions_on_s3_match_the_local_ones(tmp_path: Path, s3_root: S3Storage) -> None:
    config = CompileConfig(seed=3, incremental=True, include_ids=True)
    log_dir = tmp_path / "log"
    build_log(log_dir, 0, 30)
    log = s3_root / "log"
    log.upload_tree(log_dir)
    local_out, out = tmp_path / "inc", s3_root / "inc"
    first_local = compile_dataset(log_dir, local_out, config)
    first = compile_dataset(log, out, config)
    assert (first.version, first_local.version) == ("v00001", "v00001")
    assert_same_dataset(stored_files(first.out_dir), local_files(first_local.out_dir), same_log=False)

    build_log(log_dir, 30, 20)  # new segments: only their pairs are new
    log.upload_tree(log_dir)
    second_local = compile_dataset(log_dir, local_out, config)
    second = compile_dataset(log, out, config)
    assert second.version == "v00002" and 0 < second.pairs_total == second_local.pairs_total < first.pairs_total
    assert_same_dataset(stored_files(second.out_dir), local_files(second_local.out_dir), same_log=False)
    ids = [{json.loads(line)["pair_id"] for line in (r.out_dir / "trl" / "train.jsonl").read_text().splitlines()}
           for r in (first, second)]  # fmt: skip
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    assert [(p.version, p.summary["pairs"]) for p in compile_output.published(out)] == [
        ("v00001", first.pairs_total), ("v00002", second.pairs_total)]  # fmt: skip

    nothing_new = compile_dataset(log, out, config)
    assert nothing_new.version == "v00003" and nothing_new.pairs_total == 0


def test_an_output_of_the_other_mode_or_of_someone_else_is_refused(tmp_path: Path, s3_root: S3Storage) -> None:
    log_dir = tmp_path / "log"
    build_log(log_dir, 0, 10)
    compile_dataset(log_dir, s3_root / "plain", CONFIG)
    compile_dataset(log_dir, s3_root / "inc", CONFIG.model_copy(update={"incremental": True}))
    with pytest.raises(OutputDirError, match="holds a non-incremental dataset"):
        compile_dataset(log_dir, s3_root / "plain", CONFIG.model_copy(update={"incremental": True}))
    with pytest.raises(OutputDirError, match="holds incremental versions"):
        compile_dataset(log_dir, s3_root / "inc", CONFIG)
    (s3_root / "theirs" / "notes.txt").write_text("not a dataset")
    with pytest.raises(OutputDirError, match="is not a prefpair dataset"):
        compile_dataset(log_dir, s3_root / "theirs", CONFIG)
    assert (s3_root / "theirs").list_files() == {"notes.txt": 13}


# --------------------------------------------------------------------------- readers during a publish
def test_readers_see_the_old_dataset_until_the_pointer_is_written(
    tmp_path: Path, s3_root: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_dir = tmp_path / "log"
    build_log(log_dir, 0, 20)
    out = s3_root / "prefs"
    assert compile_output.latest_publication(out) is None  # nothing before the first publish
    first = compile_dataset(log_dir, out, CONFIG)
    old = stored_files(first.out_dir)
    build_log(log_dir, 20, 20)

    seen: list[int] = []
    upload = S3Storage.upload

    def upload_and_read(self: S3Storage, local: Path) -> None:
        upload(self, local)
        if self.key.startswith(out.key + "/data/"):  # the new dataset is partly uploaded
            current = compile_output.latest_publication(out)
            assert current is not None and current.number == 1
            assert stored_files(out / current.path) == old
            seen.append(current.number)

    monkeypatch.setattr(S3Storage, "upload", upload_and_read)
    second = compile_dataset(log_dir, out, CONFIG)
    monkeypatch.undo()
    assert len(seen) == len(second.out_dir.list_files()) > 3
    current = compile_output.latest_publication(out)
    assert current is not None and current.number == 2 and stored_files(out / current.path) != old


def test_a_crashed_publish_is_never_read_and_is_swept_later(tmp_path: Path, s3_root: S3Storage) -> None:
    log_dir = tmp_path / "log"
    build_log(log_dir, 0, 20)
    out = s3_root / "prefs"
    first = compile_dataset(log_dir, out, CONFIG)
    crashed = out / "data" / "00000002-0123456789ab"  # what a compile killed before its pointer leaves
    (crashed / "manifest.json").write_text("{}")
    (crashed / "trl" / "train.jsonl").write_text('{"half": true}\n')
    current = compile_output.latest_publication(out)
    assert current is not None and out / current.path == first.out_dir

    second = compile_dataset(log_dir, out, CONFIG)
    assert second.out_dir.name.startswith("00000002-") and second.out_dir != crashed
    assert crashed.list_files() == {}


def test_of_two_compiles_publishing_one_number_the_second_loses(
    tmp_path: Path, s3_root: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_dir = tmp_path / "log"
    build_log(log_dir, 0, 20)
    out = s3_root / "prefs"
    publish = compile_output.publish
    rival: list[Any] = []

    def publish_after_a_rival(target: Storage, stage: Path, number: int, **kwargs: Any) -> Any:
        if not rival:  # another compile of the same output publishes this number meanwhile
            monkeypatch.setattr(compile_output, "publish", publish)
            rival.append(compile_dataset(log_dir, out, CONFIG))
        return publish(target, stage, number, **kwargs)

    monkeypatch.setattr(compile_output, "publish", publish_after_a_rival)
    with pytest.raises(PublishConflictError, match="number 1"):
        compile_dataset(log_dir, out, CONFIG)
    assert [p.number for p in compile_output.published(out)] == [1]
    assert {key.split("/")[0] for key in (out / "data").list_files()} == {rival[0].out_dir.name}  # the loser's are gone


# --------------------------------------------------------------------------- command line
def test_compile_and_report_commands_read_and_write_s3(
    tmp_path: Path, s3_root: S3Storage, s3_endpoint: S3Endpoint, run_cli: Any
) -> None:
    log_dir = tmp_path / "log"
    build_log(log_dir, 0, 40)
    log = s3_root / "log"
    log.upload_tree(log_dir)
    env: dict[str, str | None] = {**s3_endpoint.environment()}
    done = run_cli("compile", "--log-dir", log.url, "--out", f"{s3_root.url}/prefs", "--format", "trl", env=env)
    assert done.returncode == 0, done.stderr
    current = compile_output.latest_publication(s3_root / "prefs")
    assert current is not None and f"dataset    {s3_root.url}/prefs/{current.path}" in done.stdout
    assert s3_endpoint.secret_access_key not in done.stdout + done.stderr

    done = run_cli("report", "--log-dir", log.url, "--out", f"{s3_root.url}/report", "--bootstrap-rounds", "5",
                   env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"report: {s3_root.url}/report/report.html" in done.stdout
    assert sorted((s3_root / "report").list_files()) == ["report.html", "report.json"]
    data = json.loads((s3_root / "report" / "report.json").read_text())
    assert data["inputs"]["source"] == log.url and data["ratings"]["comparisons"] > 0
    assert (s3_root / "report" / "report.html").read_text().lstrip().lower().startswith("<!doctype html")


def test_a_report_written_to_s3_holds_the_local_numbers(tmp_path: Path, s3_root: S3Storage) -> None:
    log_dir = tmp_path / "log"
    build_log(log_dir, 0, 40)
    config = ReportConfig(bootstrap_rounds=10, seed=1)
    local = build_report(log_dir, tmp_path / "report", config)
    stored = build_report(log_dir, s3_root / "report", config)
    assert stored.html_path == s3_root / "report" / "report.html" and stored.json_path.exists()
    without_time = [{k: v for k, v in json.loads(text).items() if k != "generated_at"}
                    for text in (local.json_path.read_text(), stored.json_path.read_text())]  # fmt: skip
    assert without_time[0] == without_time[1]


def test_the_report_reads_its_dataset_manifest_and_metrics_file_from_s3(
    tmp_path: Path, s3_root: S3Storage, s3_endpoint: S3Endpoint, run_cli: Any
) -> None:
    log_dir = tmp_path / "log"
    build_log(log_dir, 0, 40)
    compiled = compile_dataset(log_dir, s3_root / "prefs", CONFIG)
    assert isinstance(compiled.manifest, S3Storage)
    drops = json.loads(compiled.manifest.read_bytes())["counts"]["drops"]
    (s3_root / "metrics.json").write_text(json.dumps({"consumer": {"dead_letters": 5}}))
    env: dict[str, str | None] = {  # prefpair's own S3 settings: the inputs are read with them, as the log is
        "PREFPAIR_S3_ENDPOINT_URL": s3_endpoint.url, "PREFPAIR_S3_ACCESS_KEY_ID": s3_endpoint.access_key_id,
        "PREFPAIR_S3_SECRET_ACCESS_KEY": s3_endpoint.secret_access_key, "AWS_REGION": "us-east-1",
    }  # fmt: skip
    done = run_cli("report", "--log-dir", str(log_dir), "--out", str(tmp_path / "report"), "--bootstrap-rounds", "0",
                   "--manifest", compiled.manifest.url, "--dead-letters", f"{s3_root.url}/metrics.json",
                   env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    health = json.loads((tmp_path / "report" / "report.json").read_text())["health"]
    assert health["dead_letters"] == 5 and health["compile_drop_counts"] == drops and drops

    done = run_cli("report", "--dataset", compiled.out_dir.url, "--out", str(tmp_path / "from-s3"),
                   "--bootstrap-rounds", "0", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    local_dataset = tmp_path / "dataset"
    for relative in compiled.out_dir.list_files():
        (local_dataset / relative).parent.mkdir(parents=True, exist_ok=True)
        (local_dataset / relative).write_bytes((compiled.out_dir / relative).read_bytes())
    local = build_report(
        tmp_path / "nowhere", tmp_path / "local", ReportConfig(bootstrap_rounds=0, dataset=local_dataset)
    )
    from_s3 = json.loads((tmp_path / "from-s3" / "report.json").read_text())
    assert from_s3["inputs"]["source"] == compiled.out_dir.url and from_s3["ratings"]["comparisons"] > 0
    assert from_s3["ratings"] == local.ratings and from_s3["inputs"]["files"] == local.data["inputs"]["files"]

    with pytest.raises(ReportInputError, match="give the one to report on") as refused:  # which of the kept ones?
        build_report(log_dir, tmp_path / "no", ReportConfig(dataset=f"{s3_root.url}/prefs"), s3=s3_endpoint.options)
    assert refused.value.field == "dataset"
    with pytest.raises(ReportInputError, match="cannot read s3://") as unreadable:
        build_report(
            log_dir, tmp_path / "no", ReportConfig(manifest=f"{s3_root.url}/none.json"), s3=s3_endpoint.options
        )
    assert unreadable.value.field == "manifest" and not (tmp_path / "no").exists()
