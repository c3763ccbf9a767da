"""One storage interface, two kinds: a local folder and S3 (the session's real S3 server).

The server checks signatures and honours conditional writes; readers of a log on S3 see exactly
the committed segments a local reader sees; a failing run never shows the secret.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from s3_support import S3Endpoint

from prefpair.errors import StorageError
from prefpair.schemas.log import COMMIT_MARKER, committed_files, committed_segments, table_files
from prefpair.simulate import LogBuilder
from prefpair.storage import LocalStorage, S3Options, S3Storage, Storage, check_location, location


def _build_log(log_dir: Path, partitions: int = 2, segments: int = 2) -> None:
    for partition in range(partitions):
        log = LogBuilder(log_dir, partition=partition)
        for segment in range(segments):
            for i in range(3):
                request = f"p{partition}-s{segment}-r{i}"
                log.inference(request, prompt=f"prompt {request}")
                log.pairwise(request, "a", "b")
            log.commit()


# --------------------------------------------------------------------------- the server is real
def test_the_server_refuses_a_second_conditional_put(s3_root: S3Storage) -> None:
    """If-None-Match: * on an existing key is a 412 (the rule publishing relies on), through botocore and ours."""
    from botocore.exceptions import ClientError

    key = f"{s3_root.key}/pointer.json"
    client = s3_root.fs
    client.call_s3("put_object", Bucket=s3_root.bucket, Key=key, Body=b"first", IfNoneMatch="*")
    with pytest.raises(OSError) as raised:
        client.call_s3("put_object", Bucket=s3_root.bucket, Key=key, Body=b"second", IfNoneMatch="*")
    cause = raised.value.__cause__
    assert isinstance(cause, ClientError) and cause.response["ResponseMetadata"]["HTTPStatusCode"] == 412

    pointer = s3_root / "pointer.json"
    with pytest.raises(FileExistsError):
        pointer.write_bytes(b"third", exclusive=True)
    assert pointer.read_bytes() == b"first"
    (s3_root / "other.json").write_bytes(b"only", exclusive=True)  # a new key is created
    assert (s3_root / "other.json").read_bytes() == b"only"


def test_a_wrong_secret_is_refused_without_showing_it(s3_endpoint: S3Endpoint) -> None:
    wrong = "wrong-" + s3_endpoint.secret_access_key[::-1]
    options = S3Options.model_validate({**s3_endpoint.options.model_dump(), "secret_access_key": wrong})
    storage = S3Storage(s3_endpoint.bucket, "anything", options)
    with pytest.raises(StorageError) as raised:
        storage.list_files()
    message = str(raised.value)
    assert "SignatureDoesNotMatch" in message and storage.url in message
    assert wrong not in message and wrong not in repr(options) and s3_endpoint.secret_access_key not in message


def test_a_missing_bucket_is_an_error_and_a_missing_prefix_is_empty(s3_endpoint: S3Endpoint) -> None:
    with pytest.raises(StorageError, match=r"^s3://no-such-bucket-here/log: cannot list it: NoSuchBucket"):
        S3Storage("no-such-bucket-here", "log", s3_endpoint.options).list_files()
    assert s3_endpoint.root("never-written").list_files() == {}
    assert s3_endpoint.root("never-written").list_names() == []


# --------------------------------------------------------------------------- one interface
@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "root")
    s3_root: S3Storage = request.getfixturevalue("s3_root")
    return s3_root


def test_both_kinds_read_write_list_and_delete_alike(storage: Storage, tmp_path: Path) -> None:
    assert storage.list_files() == {} and storage.list_names() == [] and not (storage / "a.txt").exists()
    (storage / "a.txt").write_text("one")
    (storage / "a.txt").write_text("two")  # replaced whole
    assert (storage / "a.txt").read_text() == "two"
    with pytest.raises(FileExistsError):
        (storage / "a.txt").write_text("three", exclusive=True)
    assert (storage / "a.txt").read_text() == "two"
    with pytest.raises(FileNotFoundError):
        (storage / "missing.txt").read_bytes()

    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "sub" / "x.bin").write_bytes(b"\x00\x01")
    (tree / "sub" / "deeper" / "y.txt").write_text("why")
    assert (storage / "up").upload_tree(tree) == ["sub/deeper/y.txt", "sub/x.bin"]
    assert storage.list_files() == {"a.txt": 3, "up/sub/deeper/y.txt": 3, "up/sub/x.bin": 2}
    assert storage.list_names() == ["a.txt", "up"] and (storage / "up").list_names() == ["sub"]
    (storage / "up" / "sub" / "x.bin").download(tmp_path / "x.bin")
    assert (tmp_path / "x.bin").read_bytes() == b"\x00\x01"

    (storage / "up").delete()
    (storage / "never-written").delete()
    assert storage.list_files() == {"a.txt": 3}


def test_locations_are_checked_and_parsed(tmp_path: Path) -> None:
    options = S3Options(endpoint_url="http://127.0.0.1:1")
    stored = location("s3://bucket/some/prefix/", options)
    assert isinstance(stored, S3Storage) and (stored.bucket, stored.key, stored.url) == (
        "bucket", "some/prefix", "s3://bucket/some/prefix")  # fmt: skip
    assert (stored / "a/b.json").url == "s3://bucket/some/prefix/a/b.json" and stored.name == "prefix"
    local = location(str(tmp_path / "x"))
    assert isinstance(local, LocalStorage) and local.path == tmp_path / "x"
    for bad, reason in [("gs://bucket/x", "unsupported scheme gs://"), ("s3:///x", "no bucket"), (" ", "empty")]:
        with pytest.raises(ValueError, match=reason):
            check_location(bad)
    with pytest.raises(ValueError, match="not a relative key"):
        stored / "../escape"


# --------------------------------------------------------------------------- the log on S3
def _relative(segments: list[tuple[Any, Any]], root: str) -> list[tuple[Any, str]]:
    return [(name, str(where).removeprefix(root).lstrip("/")) for name, where in segments]


def test_readers_of_a_log_on_s3_see_what_local_readers_see(tmp_path: Path, s3_root: S3Storage) -> None:
    log_dir = tmp_path / "log"
    _build_log(log_dir)
    log = s3_root / "log"
    log.upload_tree(log_dir)

    local_segments = _relative(list(committed_segments(log_dir)), str(log_dir))
    assert len(local_segments) == 4
    assert _relative(list(committed_segments(log)), log.url) == local_segments
    assert _relative(list(committed_segments(log, 1)), log.url) == _relative(list(committed_segments(log_dir, 1)),
                                                                            str(log_dir))  # fmt: skip
    for table in ("inference", "feedback", "orphans"):
        local_files = [str(f.relative_to(log_dir)) for f in table_files(log_dir, table)]
        assert [f.removeprefix(log.url + "/") for f in table_files(log, table)] == local_files
    assert committed_files(LocalStorage(log_dir))[1]["feedback"] == [str(f) for f in table_files(log_dir, "feedback")]


def test_a_segment_on_s3_without_its_commit_marker_is_not_read(tmp_path: Path, s3_root: S3Storage) -> None:
    """A writer that uploaded a segment's Parquet files but not yet its state.json: readers skip it."""
    log_dir = tmp_path / "log"
    _build_log(log_dir, partitions=1, segments=2)
    log = s3_root / "log"
    log.upload_tree(log_dir)
    (name, path), (newest, newest_path) = committed_segments(log_dir)
    (log / f"{newest_path.relative_to(log_dir).as_posix()}/{COMMIT_MARKER}").delete()
    (log / f"partition=00000/.tmp-{newest.dirname}-1234/feedback.parquet").upload(newest_path / "feedback.parquet")

    assert [n for n, _ in committed_segments(log)] == [name]
    assert [f.removeprefix(log.url + "/") for f in table_files(log, "feedback")] == [
        f"{path.relative_to(log_dir).as_posix()}/feedback.parquet"
    ]
    (log / f"{newest_path.relative_to(log_dir).as_posix()}/{COMMIT_MARKER}").upload(newest_path / COMMIT_MARKER)
    assert [n for n, _ in committed_segments(log)] == [name, newest]


# --------------------------------------------------------------------------- secrets
def test_a_failing_run_never_shows_the_secret(s3_endpoint: S3Endpoint, run_cli: Any, tmp_path: Path) -> None:
    wrong = "not-the-secret-" + s3_endpoint.secret_access_key[::-1]
    base = f"s3://{s3_endpoint.bucket}/no-such-log"
    via_aws = {**s3_endpoint.environment(), "AWS_SECRET_ACCESS_KEY": wrong}
    via_prefpair = {"PREFPAIR_S3_ENDPOINT_URL": s3_endpoint.url, "PREFPAIR_S3_ACCESS_KEY_ID": s3_endpoint.access_key_id,
                    "PREFPAIR_S3_SECRET_ACCESS_KEY": wrong, "AWS_REGION": "us-east-1"}  # fmt: skip
    for env in (via_aws, via_prefpair):
        done = run_cli("compile", "--log-dir", base, "--out", f"{base}-out", "--log-level", "DEBUG", env=env)
        assert done.returncode == 2, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"prefpair compile: error: {base}: cannot list it: SignatureDoesNotMatch"), last
        assert "DEBUG" in done.stderr  # the debug log was on, and still
        assert wrong not in done.stderr + done.stdout
        assert s3_endpoint.secret_access_key not in done.stderr + done.stdout


def test_the_s3_client_libraries_say_only_warnings_unless_the_log_level_is_debug(
    s3_endpoint: S3Endpoint, run_cli: Any
) -> None:
    """botocore's INFO "Found credentials in environment variables." is not a line of prefpair's log."""
    base = f"s3://{s3_endpoint.bucket}/no-log-here"
    args = ("compile", "--log-dir", base, "--out", f"{base}-out")
    quiet = run_cli(*args, "--log-level", "INFO", env={**s3_endpoint.environment()})
    assert quiet.returncode == 2 and "no committed log segments" in quiet.stderr, quiet.stderr
    assert "Found credentials" not in quiet.stderr and "botocore" not in quiet.stderr, quiet.stderr
    loud = run_cli(*args, "--log-level", "DEBUG", env={**s3_endpoint.environment()})
    assert loud.returncode == 2 and "Found credentials in environment variables" in loud.stderr, loud.stderr[-2000:]


# --------------------------------------------------------------------------- docker compose
def test_docker_compose_compiles_into_its_s3_service() -> None:
    """The compose file (not run here: no Docker engine) parses, its compile command is a valid
    command line whose output is in the bucket the bucket step creates, on the S3 service."""
    import json
    import re
    import shlex

    import yaml

    from prefpair.cli import build_parser
    from prefpair.compile.cli import JOB_FLAGS
    from prefpair.consumers.config import CONSUMER_FLAGS

    root = Path(__file__).resolve().parents[1]
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    services = compose["services"]
    script = services["compile"]["command"][0]
    line = " ".join(part.strip() for part in script.split("\n"))
    command = shlex.split(re.search(r"(prefpair compile[^|]*)\|\|", line).group(1))  # type: ignore[union-attr]
    args = build_parser().parse_args(command[1:])
    job = JOB_FLAGS.load(args, environ={})
    bucket = services["s3-bucket"]["environment"]["BUCKET"]
    assert job.out.startswith(f"s3://{bucket}/")
    # the consumer replicas write the log the compile reads, in the same bucket
    consume = build_parser().parse_args(services["consumer"]["command"])
    log_dir = CONSUMER_FLAGS.load(consume, environ={}).log_dir
    assert log_dir == str(job.log_dir) and log_dir.startswith(f"s3://{bucket}/")
    assert services["consumer"]["depends_on"]["s3-bucket"]["condition"] == "service_completed_successfully"
    env = services["compile"]["environment"]
    assert env["AWS_ENDPOINT_URL_S3"] == "http://s3:8333" and "s3" in services
    assert services["compile"]["depends_on"]["s3-bucket"]["condition"] == "service_completed_successfully"
    identities = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", compose["configs"]["s3-identities"]["content"])
    credentials = json.loads(identities)["identities"][0]["credentials"][0]
    defaults = {k: re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", v) for k, v in env.items() if k.startswith("AWS_")}
    assert (credentials["accessKey"], credentials["secretKey"]) == (
        defaults["AWS_ACCESS_KEY_ID"], defaults["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
