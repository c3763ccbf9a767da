"""Every option of every command, and every ``PREFPAIR_*`` variable, reaches the config it is for.

The options are enumerated from the parsers themselves, so a new flag without a row in
:data:`CASES` fails here; each row sets one flag (or variable), and the test reads the value back
from the config object the command builds (through the same loader the command calls).
"""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import reduce
from pathlib import Path
from typing import Any

import pytest
from conftest import MakeSettings
from pydantic import BaseModel, SecretStr

from prefpair.broker.cli import BROKER_FLAGS
from prefpair.cli import build_parser, leaf_parsers, main, settings_from_args
from prefpair.cli.demo import DEMO_FLAGS
from prefpair.cli.erase import ERASE_FLAGS
from prefpair.cli.experiments import CREATE_FLAGS as EXPERIMENT_CREATE_FLAGS
from prefpair.cli.experiments import EXPERIMENTS_FLAGS
from prefpair.cli.logs import LOG_FLAGS
from prefpair.compile.cli import JOB_FLAGS as COMPILE_JOB_FLAGS
from prefpair.compile.config import COMPILE_FLAGS
from prefpair.config import SETTINGS_FLAGS, Settings
from prefpair.consumers.cli import COMPACT_FLAGS, CONSUME_RUN_FLAGS
from prefpair.consumers.config import CONSUMER_FLAGS
from prefpair.errors import ConfigError
from prefpair.flags import Flags, Option
from prefpair.judge.config import JUDGE_FLAGS
from prefpair.report.cli import JOB_FLAGS as REPORT_JOB_FLAGS
from prefpair.report.config import REPORT_FLAGS
from prefpair.schemas import SourceType
from prefpair.service.cli import QUERY_FLAGS
from prefpair.service.config import SERVICE_FLAGS, ServiceConfig, TokenReuse, TokenSecret
from prefpair.topics import TOPICS_FLAGS

RunCli = Callable[..., "subprocess.CompletedProcess[str]"]

FLAG_SETS: tuple[Flags[Any], ...] = (
    SETTINGS_FLAGS, LOG_FLAGS, TOPICS_FLAGS, BROKER_FLAGS, CONSUMER_FLAGS, CONSUME_RUN_FLAGS, COMPACT_FLAGS,
    COMPILE_FLAGS, COMPILE_JOB_FLAGS, SERVICE_FLAGS, QUERY_FLAGS, REPORT_FLAGS, REPORT_JOB_FLAGS, DEMO_FLAGS,
    JUDGE_FLAGS, ERASE_FLAGS, EXPERIMENT_CREATE_FLAGS, EXPERIMENTS_FLAGS,
)  # fmt: skip
OWNERS: dict[str, tuple[Flags[Any], Option]] = {
    option.dest: (flags, option) for flags in FLAG_SETS for option in flags.options
}
SECRET = "s" * 20
TMP = "{tmp}"  # replaced by the test's tmp_path


@dataclass(frozen=True)
class Case:
    """One field: the flag tokens that set it, the variable's value that sets it, what is read back."""

    argv: tuple[str, ...] | None
    env: str | None
    expected: Any
    read: str | None = None
    """Read another field than the one set (the keys a keys file adds, rather than its path)."""
    env_also: dict[str, str] | None = None
    """Other variables a valid value needs beside this one (the flags go in ``argv``)."""


def case(
    argv: tuple[str, ...] | None,
    env: str | None,
    expected: Any,
    read: str | None = None,
    env_also: dict[str, str] | None = None,
) -> Case:
    return Case(argv, env, expected, read, env_also)


NOV_1 = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000)

# (model, field path) -> Case. argv None: no flag (a secret); env None: no variable.
CASES: dict[tuple[str, str], Case] = {
    ("Settings", "bootstrap_servers"): case(("--bootstrap-servers", "h:1"), "h:1", "h:1"),
    ("Settings", "home"): case(("--home", "/x/home"), "/x/home", Path("/x/home")),
    ("Settings", "inference_topic"): case(("--inference-topic", "t.i"), "t.i", "t.i"),
    ("Settings", "feedback_topic"): case(("--feedback-topic", "t.f"), "t.f", "t.f"),
    ("Settings", "dead_letter_topic"): case(("--dead-letter-topic", "t.d"), "t.d", "t.d"),
    ("Settings", "experiments_topic"): case(("--experiments-topic", "t.e"), "t.e", "t.e"),
    ("Settings", "tokens_topic"): case(("--tokens-topic", "t.t"), "t.t", "t.t"),
    ("Settings", "erasure_topic"): case(("--erasure-topic", "t.x"), "t.x", "t.x"),
    ("Settings", "partitions"): case(("--partitions", "8"), "8", 8),
    ("Settings", "replication_factor"): case(("--replication-factor", "3"), "3", 3),
    ("Settings", "retention_ms"): case(("--retention-ms", "-1"), "-1", -1),
    ("Settings", "schema_registry_url"): case(("--schema-registry-url", "http://r:8081"), "http://r:8081", "http://r:8081"),
    ("Settings", "s3_endpoint_url"): case(("--s3-endpoint-url", "http://s3:8333"), "http://s3:8333", "http://s3:8333"),
    ("Settings", "s3_region"): case(("--s3-region", "eu-west-3"), "eu-west-3", "eu-west-3"),
    ("Settings", "s3_access_key_id"): case(("--s3-access-key-id", "AKID"), "AKID", "AKID"),
    ("Settings", "s3_secret_access_key"): case(None, SECRET, SecretStr(SECRET)),
    ("Settings", "kafka"): case(("--kafka-option", "acks=all", "--kafka-option", "linger.ms=5"), None,
                                {"acks": "all", "linger.ms": "5"}),  # variables: PREFPAIR_KAFKA_<KEY>, test_config
    ("LogConfig", "log_level"): case(("--log-level", "debug"), "debug", "DEBUG"),
    ("LogConfig", "log_format"): case(("--log-format", "json"), "JSON", "json"),
    ("TopicsCommand", "timeout"): case(("--timeout", "5"), "5", 5.0),
    ("BrokerCommand", "data_dir"): case(("--data-dir", "/b"), "/b", Path("/b")),
    ("BrokerCommand", "cache_dir"): case(("--cache-dir", "/c"), "/c", Path("/c")),
    ("BrokerCommand", "port"): case(("--port", "9999"), "9999", 9999),
    ("BrokerCommand", "controller_port"): case(("--controller-port", "9998"), "9998", 9998),
    ("BrokerCommand", "heap"): case(("--heap", "1g"), "1g", "1g"),
    ("BrokerCommand", "start_timeout"): case(("--timeout", "5"), "5", 5.0),
    ("BrokerCommand", "stop_timeout"): case(("--timeout", "6"), "6", 6.0),
    ("ConsumerConfig", "log_dir"): case(("--log-dir", "s3://b/log"), "s3://b/log", "s3://b/log"),
    ("ConsumerConfig", "group_id"): case(("--group-id", "g"), "g", "g"),
    ("ConsumerConfig", "instance_id"): case(("--instance-id", "i-1"), "i-1", "i-1"),
    ("ConsumerConfig", "grace_ms"): case(("--grace-ms", "1234"), "1234", 1234),
    ("ConsumerConfig", "flush_interval_ms"): case(("--flush-interval-ms", "100"), "100", 100),
    ("ConsumerConfig", "flush_rows"): case(("--flush-rows", "10"), "10", 10),
    ("ConsumerConfig", "flush_bytes"): case(("--flush-bytes", "2048"), "2048", 2048),
    ("ConsumerConfig", "hot_state_bytes"): case(("--hot-state-bytes", "0"), "0", 0),
    ("ConsumerConfig", "dedup_ids"): case(("--dedup-ids", "5"), "5", 5),
    ("ConsumerConfig", "compression"): case(("--compression", "ZSTD"), "zstd", "zstd"),
    ("ConsumerConfig", "batch_size"): case(("--batch-size", "7"), "7", 7),
    ("ConsumerConfig", "progress_interval_s"): case(("--progress-interval", "2.5"), "2.5", 2.5),
    ("ConsumerConfig", "metrics_path"): case(("--metrics-file", "/m.json"), "/m.json", "/m.json"),
    ("ConsumerConfig", "session_timeout_ms"): case(("--session-timeout-ms", "6000"), "6000", 6000),
    ("ConsumerConfig", "assignment_timeout_s"): case(("--assignment-timeout", "9"), "9", 9.0),
    ("ConsumerConfig", "max_idle_ms"): case(("--max-idle-ms", "50"), "50", 50),
    ("ConsumerConfig", "max_future_ms"): case(("--max-future-ms", "60000"), "60000", 60_000),
    ("ConsumerConfig", "max_queued_bytes"): case(("--max-queued-bytes", "4096"), "4096", 4096),
    ("ConsumerConfig", "backlog_flush_interval_ms"): case(("--backlog-flush-interval-ms", "900"), "900", 900),
    ("ConsumeRun", "until_caught_up"): case(("--until-caught-up",), "true", True),
    ("EraseCommand", "user"): case(("--user", "u-9"), "u-9", "u-9"),
    ("EraseCommand", "request_id"): case(("--request-id", "r-9"), "r-9", "r-9"),
    ("EraseCommand", "session_id"): case(("--session-id", "s-9"), "s-9", "s-9"),
    ("EraseCommand", "requested_by"): case(("--requested-by", "ops"), "ops", "ops"),
    ("EraseCommand", "reader_grace_s"): case(("--reader-grace", "1"), "1", 1.0),
    ("EraseCommand", "consumer_wait_s"): case(("--consumer-wait", "9"), "9", 9.0),
    ("EraseCommand", "datasets"): case(("--datasets", "/d"), "/d", "/d"),
    ("CompactOptions", "target_rows"): case(("--target-rows", "10"), "10", 10),
    ("CompactOptions", "retain_days"): case(("--retain-days", "30"), "30", 30.0),
    ("CompactOptions", "delete_after_s"): case(("--delete-after", "0"), "0", 0.0),
    ("CompileConfig", "formats"): case(("--format", "openai", "--format", "TRL"), "trl,openai", ("trl", "openai")),
    ("CompileConfig", "rankings"): case(("--rankings", "best_worst"), "best_worst", "best_worst"),
    ("CompileConfig", "min_margin"): case(("--min-margin", "0.5"), "0.5", 0.5),
    ("CompileConfig", "contradictions"): case(("--contradictions", "drop"), "drop", "drop"),
    ("CompileConfig", "filters.since_ms"): case(("--since", "2026-11-01"), "2026-11-01", NOV_1),
    ("CompileConfig", "filters.until_ms"): case(("--until", "1000"), "1000", 1000),
    ("CompileConfig", "filters.models"): case(("--model", "a,b", "--model", "c"), "a,b,c", ("a", "b", "c")),
    ("CompileConfig", "filters.model_versions"): case(("--model-version", "v1"), "v1", ("v1",)),
    ("CompileConfig", "filters.source_types"): case(("--source-type", "app_user"), "app_user", ("APP_USER",)),
    ("CompileConfig", "filters.keys"): case(("--key", "k"), "k", ("k",)),
    ("CompileConfig", "filters.environments"): case(("--environment", "prod"), "prod", ("prod",)),
    ("CompileConfig", "filters.users"): case(("--user", "u"), "u", ("u",)),
    ("CompileConfig", "filters.tags"): case(("--tag", "t1,t2"), "t1,t2", ("t1", "t2")),
    ("CompileConfig", "sampling.max_pairs_per_prompt"): case(("--max-pairs-per-prompt", "3"), "3", 3),
    ("CompileConfig", "sampling.max_pairs"): case(("--max-pairs", "100"), "100", 100),
    ("CompileConfig", "sampling.stratify_by"): case(("--stratify-by", "model"), "model", "model"),
    ("CompileConfig", "sampling.balance_position"): case(("--balance-position",), "1", True),
    ("CompileConfig", "sampling.strategy"): case(("--strategy", "IPW"), "ipw", "ipw"),
    ("CompileConfig", "sampling.strategy_pairs"): case(("--strategy-pairs", "5", "--strategy", "uncertain"), "5", 5,
                                                       env_also={"PREFPAIR_COMPILE_STRATEGY": "uncertain"}),
    ("CompileConfig", "splits"): case(("--split", "train=0.5", "--split", "test=0.5"), "train=0.5,test=0.5",
                                      {"train": 0.5, "test": 0.5}),
    ("CompileConfig", "seed"): case(("--seed", "5"), "5", 5),
    ("CompileConfig", "include_margin"): case(("--include-margin",), "true", True),
    ("CompileConfig", "include_ids"): case(("--include-ids",), "yes", True),
    ("CompileConfig", "include_provenance"): case(("--include-provenance",), "on", True),
    ("CompileConfig", "incremental"): case(("--incremental",), "true", True),
    ("CompileConfig", "memory_limit"): case(("--memory-limit", "4GB"), "4GB", "4GB"),
    ("CompileConfig", "threads"): case(("--threads", "4"), "4", 4),
    ("CompileConfig", "engine"): case(("--engine", "SPARK"), "spark", "spark"),
    ("CompileConfig", "spark_master"): case(("--spark-master", "spark://h:7077"), "spark://h:7077", "spark://h:7077"),
    ("CompileConfig", "margin_scale"): case(("--margin-scale", "0.5"), "0.5", 0.5),
    ("CompileConfig", "redact"): case(("--no-redact",), "false", False),
    ("CompileConfig", "redact_patterns"): case(("--redact-pattern", "emp=EMP-[0-9]+"), "emp=EMP-[0-9]+",
                                               {"emp": "EMP-[0-9]+"}),
    ("CompileConfig", "text_prompt"): case(("--text-prompt", "FOLD"), "fold", "fold"),
    ("CompileConfig", "implicit"): case(("--implicit", "ONLY"), "only", "only"),
    ("CompileConfig", "implicit_rules"): case(("--implicit-rules", "/r.toml"), "/r.toml", "/r.toml"),
    ("CompileConfig", "card.pretty_name"): case(("--pretty-name", "My pairs"), "My pairs", "My pairs"),
    ("CompileConfig", "card.license"): case(("--license", "MIT"), "mit", "mit"),
    ("CompileConfig", "card.license_name"): case(
        ("--license-name", "acme-1", "--license", "other", "--license-link", "https://l.example"), "acme-1", "acme-1",
        env_also={"PREFPAIR_COMPILE_LICENSE": "other", "PREFPAIR_COMPILE_LICENSE_LINK": "https://l.example"}),
    ("CompileConfig", "card.license_link"): case(
        ("--license-link", "https://l.example", "--license", "other", "--license-name", "acme-1"),
        "https://l.example", "https://l.example",
        env_also={"PREFPAIR_COMPILE_LICENSE": "other", "PREFPAIR_COMPILE_LICENSE_NAME": "acme-1"}),
    ("CompileJob", "log_dir"): case(("--log-dir", "s3://b/l"), "s3://b/l", "s3://b/l"),
    ("CompileJob", "out"): case(("--out", "/o"), "/o", "/o"),
    ("CompileJob", "name"): case(("--name", "mine"), "mine", "mine"),
    ("ServiceConfig", "host"): case(("--host", "0.0.0.0"), "0.0.0.0", "0.0.0.0"),
    ("ServiceConfig", "port"): case(("--port", "9000"), "9000", 9000),
    ("ServiceConfig", "api_keys_file"): case(("--api-keys-file", f"{TMP}/keys"), f"{TMP}/keys",
                                             (SecretStr("key-from-file"),), read="api_keys"),
    ("ServiceConfig", "api_keys"): case(None, "a, b", (SecretStr("a"), SecretStr("b"))),
    ("ServiceConfig", "admin_keys"): case(None, "k1,k2", (SecretStr("k1"), SecretStr("k2"))),
    ("ServiceConfig", "token_secrets_file"): case(("--token-secrets-file", f"{TMP}/secrets"), f"{TMP}/secrets",
                                                  (TokenSecret(kid="f1", secret=SecretStr(SECRET)),),
                                                  read="token_secrets"),
    ("ServiceConfig", "token_secrets"): case(None, f"e2:{SECRET},e1:{SECRET}x", (
        TokenSecret(kid="e2", secret=SecretStr(SECRET)), TokenSecret(kid="e1", secret=SecretStr(SECRET + "x")))),
    ("ServiceConfig", "public_base_url"): case(("--public-url", "https://f.example"), "https://f.example",
                                               "https://f.example"),
    ("ServiceConfig", "max_body_bytes"): case(("--max-body-bytes", "2048"), "2048", 2048),
    ("ServiceConfig", "key_rate"): case(("--key-rate", "1.5"), "1.5", 1.5),
    ("ServiceConfig", "key_burst"): case(("--key-burst", "3"), "3", 3),
    ("ServiceConfig", "token_rate"): case(("--token-rate", "2"), "2", 2.0),
    ("ServiceConfig", "token_burst"): case(("--token-burst", "9"), "9", 9),
    ("ServiceConfig", "auth_failure_rate"): case(("--auth-failure-rate", "1"), "1", 1.0),
    ("ServiceConfig", "auth_failure_burst"): case(("--auth-failure-burst", "2"), "2", 2),
    ("ServiceConfig", "cors_origins"): case(("--cors-origin", "https://a.example", "--cors-origin", "https://b.example"),
                                            "https://a.example,https://b.example",
                                            ("https://a.example", "https://b.example")),
    ("ServiceConfig", "trusted_proxies"): case(("--trusted-proxy", "10.0.0.7", "--trusted-proxy", "10.1.0.0/16"),
                                               "10.0.0.7,10.1.0.0/16", ("10.0.0.7", "10.1.0.0/16")),
    ("ServiceConfig", "token_reuse"): case(("--token-reuse", "expiry"), "expiry", TokenReuse.EXPIRY),
    ("ServiceConfig", "token_ttl"): case(("--token-ttl", "60"), "60", 60),
    ("ServiceConfig", "token_max_ttl"): case(("--token-max-ttl", "100000"), "100000", 100_000),
    ("ServiceConfig", "idempotency_cache_size"): case(("--idempotency-cache-size", "10"), "10", 10),
    ("ServiceConfig", "used_tokens_cache_size"): case(("--used-tokens-cache-size", "10"), "10", 10),
    ("ServiceConfig", "ack_timeout"): case(("--ack-timeout", "3"), "3", 3.0),
    ("ServiceConfig", "max_batch"): case(("--max-batch", "10"), "10", 10),
    ("FeedbackQuery", "request_id"): case(("--request-id", "r1"), None, "r1"),
    ("FeedbackQuery", "key"): case(("--key", "k"), None, "k"),
    ("FeedbackQuery", "source_type"): case(("--source-type", "model_judge"), None, SourceType.MODEL_JUDGE),
    ("FeedbackQuery", "has_score"): case(("--has-score",), None, True),
    ("FeedbackQuery", "has_comment"): case(("--no-has-comment",), None, False),
    ("FeedbackQuery", "since_ms"): case(("--since", "1970-01-01T00:00:01"), None, 1000),
    ("FeedbackQuery", "until_ms"): case(("--until", "1970-01-01T00:00:02+00:00"), None, 2000),
    ("FeedbackQuery", "limit"): case(("--limit", "5"), None, 5),
    ("FeedbackQuery", "cursor"): case(("--cursor", "c"), None, "c"),
    ("FeedbackQuery", "all"): case(("--all",), None, True),
    ("ReportConfig", "bootstrap_rounds"): case(("--bootstrap-rounds", "10"), "10", 10),
    ("ReportConfig", "seed"): case(("--seed", "3"), "3", 3),
    ("ReportConfig", "elo_k"): case(("--elo-k", "8"), "8", 8.0),
    ("ReportConfig", "confidence"): case(("--confidence", "0.9"), "0.9", 0.9),
    ("ReportConfig", "per_source"): case(("--per-source",), "true", True),
    ("ReportConfig", "score_pairs_in_ratings"): case(("--score-pairs",), "true", True),
    ("ReportConfig", "bt_prior"): case(("--bt-prior", "0.1"), "0.1", 0.1),
    ("ReportConfig", "time_buckets"): case(("--time-buckets", "12"), "12", 12),
    ("ReportConfig", "dead_letters"): case(("--dead-letters", "6"), "metrics.json", None),  # see _expected
    ("ReportConfig", "manifest"): case(("--manifest", "s3://b/m.json"), "s3://b/m.json", "s3://b/m.json"),
    ("ReportConfig", "experiments"): case(("--experiments", "/e.json"), "/e.json", Path("/e.json")),
    ("ReportConfig", "dataset"): case(("--dataset", "/d"), "/d", "/d"),
    ("ReportConfig", "title"): case(("--title", "T"), "T", "T"),
    ("ReportConfig", "implicit_rules"): case(("--implicit-rules", "/r.toml"), "/r.toml", Path("/r.toml")),
    ("ReportJob", "log_dir"): case(("--log-dir", "/l"), "/l", "/l"),
    ("ReportJob", "out"): case(("--out", "s3://b/o"), "s3://b/o", "s3://b/o"),
    ("JudgeConfig", "kind"): case(("--kind", "RANKING"), "score", None),  # see _expected
    ("JudgeConfig", "key"): case(("--key", "helpful"), "helpful", "helpful"),
    ("JudgeConfig", "evaluator"): case(("--evaluator", "pkg.mod:fn"), "pkg.mod:fn", "pkg.mod:fn"),
    ("JudgeConfig", "endpoint"): case(("--endpoint", "http://j:8000/v1"), "http://j:8000/v1", "http://j:8000/v1"),
    ("JudgeConfig", "judge_model"): case(("--judge-model", "gpt-j"), "gpt-j", "gpt-j"),
    ("JudgeConfig", "api_key"): case(None, SECRET, SecretStr(SECRET)),
    ("JudgeConfig", "prompt_template"): case(("--prompt-template", "/t.txt"), "/t.txt", Path("/t.txt")),
    ("JudgeConfig", "temperature"): case(("--temperature", "0.7"), "0.7", 0.7),
    ("JudgeConfig", "json_mode"): case(("--no-json-mode",), "false", False),
    ("JudgeConfig", "evaluator_version"): case(("--evaluator-version", "2"), "2", "2"),
    ("JudgeConfig", "source_type"): case(("--source-type", "reward_model"), "REWARD_MODEL", "REWARD_MODEL"),
    ("JudgeConfig", "run_id"): case(("--run-id", "nightly-1"), "nightly-1", "nightly-1"),
    ("JudgeConfig", "experiment_id"): case(("--experiment-id", "exp-1"), "exp-1", "exp-1"),
    ("JudgeConfig", "feedback_group_id"): case(("--feedback-group-id", "g-1"), "g-1", "g-1"),
    ("JudgeConfig", "selection.since_ms"): case(("--since", "2026-11-01"), "2026-11-01", NOV_1),
    ("JudgeConfig", "selection.until_ms"): case(("--until", "1000"), "1000", 1000),
    ("JudgeConfig", "selection.models"): case(("--model", "a,b"), "a,b", ("a", "b")),
    ("JudgeConfig", "selection.model_versions"): case(("--model-version", "v2"), "v2", ("v2",)),
    ("JudgeConfig", "selection.environments"): case(("--environment", "prod"), "prod", ("prod",)),
    ("JudgeConfig", "selection.users"): case(("--user", "u1"), "u1", ("u1",)),
    ("JudgeConfig", "selection.tags"): case(("--tag", "x,y"), "x,y", ("x", "y")),
    ("JudgeConfig", "selection.sample"): case(("--sample", "50"), "50", 50),
    ("JudgeConfig", "selection.seed"): case(("--seed", "9"), "9", 9),
    ("JudgeConfig", "score_min"): case(("--score-min", "0"), "0", 0.0),
    ("JudgeConfig", "score_max"): case(("--score-max", "5"), "5", 5.0),
    ("JudgeConfig", "concurrency"): case(("--concurrency", "16"), "16", 16),
    ("JudgeConfig", "rate"): case(("--rate", "2.5"), "2.5", 2.5),
    ("JudgeConfig", "max_retries"): case(("--max-retries", "0"), "0", 0),
    ("JudgeConfig", "backoff_s"): case(("--backoff", "2"), "2", 2.0),
    ("JudgeConfig", "timeout_s"): case(("--timeout", "7"), "7", 7.0),
    ("JudgeConfig", "prompt_price_per_1k"): case(("--prompt-price-per-1k", "0.15"), "0.15", 0.15),
    ("JudgeConfig", "completion_price_per_1k"): case(("--completion-price-per-1k", "0.6"), "0.6", 0.6),
    ("JudgeConfig", "checkpoint_every"): case(("--checkpoint-every", "7"), "7", 7),
    ("JudgeConfig", "log_dir"): case(("--log-dir", "s3://b/log"), "s3://b/log", "s3://b/log"),
    ("JudgeConfig", "progress"): case(("--no-progress",), "false", False),
    ("ExperimentCreate", "name"): case(("--name", "large vs small"), None, "large vs small"),
    ("ExperimentCreate", "arms"): case(("--arm", "a", "--arm", "b:2"), None, ("a", "b:2")),
    ("ExperimentCreate", "experiment_id"): case(("--id", "exp-1"), None, "exp-1"),
    ("ExperimentCreate", "description"): case(("--description", "why"), None, "why"),
    ("ExperimentCreate", "metadata"): case(("--metadata", "team=chat"), None, {"team": "chat"}),
    ("ExperimentsCommand", "json_output"): case(("--json",), None, True),
    ("ExperimentsCommand", "timeout"): case(("--timeout", "5"), None, 5.0),
    ("DemoOptions", "requests"): case(("--requests", "10"), "10", 10),
    ("DemoOptions", "seed"): case(("--seed", "3"), "3", 3),
    ("DemoOptions", "partitions"): case(("--partitions", "2"), "2", 2),
    ("DemoOptions", "report"): case(("--no-report",), "false", False),
    ("DemoOptions", "judge"): case(("--no-judge",), "false", False),
    ("DemoOptions", "keep_broker"): case(("--keep-broker",), "true", True),
}  # fmt: skip


def _expected(key: tuple[str, str], source: str) -> Any:
    if key == ("ReportConfig", "dead_letters"):  # a count, or a metrics file holding one
        return 6 if source == "flag" else "metrics.json"
    if key == ("JudgeConfig", "kind"):  # choices match ignoring case, from either side
        return "ranking" if source == "flag" else "score"
    return CASES[key].expected


# ---------------------------------------------------------------------------- enumeration
def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every leaf command (``consume``, ``broker start``, ...) with its parser."""
    found: list[tuple[tuple[str, ...], Any]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                if leaf_parsers(child) == [child]:
                    found.append(((*path, name), child))
                else:
                    found.extend(_commands(child, (*path, name)))
    return found


PARSER = build_parser()
COMMANDS = _commands(PARSER)
OPTIONS = [  # (command, option) for every option of every command
    (path, action)
    for path, leaf in COMMANDS
    for action in leaf._actions
    if action.option_strings and not isinstance(action, argparse._HelpAction)
]
VARIABLES = [(flags, option) for flags in FLAG_SETS for option in flags.options if option.env]


def _read(model: BaseModel, path: str) -> Any:
    return reduce(getattr, path.split("."), model)


def _fill(text: str, tmp: Path) -> str:
    return text.replace(TMP, str(tmp))


def _files(tmp: Path) -> None:
    (tmp / "keys").write_text("# ops\nkey-from-file\n")
    (tmp / "secrets").write_text(f"f1:{SECRET}\n")


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("PREFPAIR_")]:
        monkeypatch.delenv(name)


def _built(flags: Flags[Any], args: argparse.Namespace | None, environ: dict[str, str]) -> BaseModel:
    """The object the command builds: what it calls, with ``environ`` as the environment."""
    if flags is SETTINGS_FLAGS:
        return Settings.load(args, environ)
    if flags is SERVICE_FLAGS:
        return ServiceConfig.load(args, environ)
    built: BaseModel = flags.load(args, environ)
    return built


# ---------------------------------------------------------------------------- every flag, every variable
def test_the_table_covers_commands_and_options() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"consume", "compact", "compile", "serve", "report", "demo", "broker start", "topics create",
            "feedback list", "feedback show"} <= names  # fmt: skip
    for path, leaf in COMMANDS:  # the shared settings and logging flags sit on every command
        assert {"--home", "--kafka-option", "--log-level"} <= set(leaf._option_string_actions), path


@pytest.mark.parametrize(("command", "action"), OPTIONS, ids=[" ".join([*c, a.option_strings[0]]) for c, a in OPTIONS])
def test_every_flag_reaches_its_config(
    command: tuple[str, ...], action: argparse.Action, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert action.dest in OWNERS, f"{' '.join(command)} {action.option_strings[0]} is not derived from a config model"
    flags, option = OWNERS[action.dest]
    key = (flags.model.__name__, option.path)
    assert key in CASES, f"add a row for {key} ({action.option_strings[0]}) to CASES"
    row = CASES[key]
    assert row.argv is not None and row.argv[0] in action.option_strings, f"the row of {key} sets another flag"
    _clean_environment(monkeypatch)
    _files(tmp_path)
    args = PARSER.parse_args([*command, *(_fill(token, tmp_path) for token in row.argv)])
    built = settings_from_args(args) if flags is SETTINGS_FLAGS else _built(flags, args, {})
    expected = _expected(key, "flag")
    assert _read(built, row.read or option.path) == expected
    default = _built(flags, PARSER.parse_args(list(command)), {})
    assert _read(default, row.read or option.path) != expected, "the row must change the value"


@pytest.mark.parametrize(("flags", "option"), VARIABLES, ids=[str(option.env) for _, option in VARIABLES])
def test_every_variable_reaches_its_config(flags: Flags[Any], option: Option, tmp_path: Path) -> None:
    key = (flags.model.__name__, option.path)
    assert key in CASES and CASES[key].env is not None, f"add a row with a variable value for {key} to CASES"
    row = CASES[key]
    _files(tmp_path)
    assert option.env is not None
    built = _built(flags, None, {option.env: _fill(row.env or "", tmp_path), **(row.env_also or {})})
    assert _read(built, row.read or option.path) == _expected(key, "env")


def test_every_field_is_a_flag_of_some_command() -> None:
    on_parsers = {action.dest for _, action in OPTIONS}
    missing = [f"{flags.model.__name__}.{o.path}" for flags in FLAG_SETS for o in flags.options
               if o.flag is not None and o.dest not in on_parsers]  # fmt: skip
    assert missing == []


def test_no_variable_is_read_by_two_fields() -> None:
    names = [option.env for _, option in VARIABLES]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert all(name.startswith("PREFPAIR_") for name in names if name)


def test_every_row_is_used() -> None:
    used = {(flags.model.__name__, option.path) for flags in FLAG_SETS for option in flags.options}
    assert set(CASES) == used


# ---------------------------------------------------------------------------- precedence and errors
PRECEDENCE = [
    # command, flag tokens, loader, field, its value from the flag, variable, its value, the value it gives, default
    (("consume",), ("--grace-ms", "7"), CONSUMER_FLAGS, "grace_ms", 7, "PREFPAIR_CONSUMER_GRACE_MS", "5", 5, 300_000),
    (("consume",), ("--metrics-file", "/f"), CONSUMER_FLAGS, "metrics_path", "/f", "PREFPAIR_CONSUMER_METRICS_PATH",
     "/e", "/e", None),
    (("consume",), ("--no-until-caught-up",), CONSUME_RUN_FLAGS, "until_caught_up", False,
     "PREFPAIR_CONSUMER_UNTIL_CAUGHT_UP", "true", True, False),
    (("compile",), ("--format", "trl"), COMPILE_FLAGS, "formats", ("trl",), "PREFPAIR_COMPILE_FORMATS", "openai",
     ("openai",), None),
    (("compile",), ("--since", "1"), COMPILE_FLAGS, "filters.since_ms", 1, "PREFPAIR_COMPILE_SINCE_MS", "2", 2, None),
    (("serve",), ("--port", "9000"), SERVICE_FLAGS, "port", 9000, "PREFPAIR_SERVICE_PORT", "7000", 7000, 8080),
    (("report",), ("--seed", "1"), REPORT_FLAGS, "seed", 1, "PREFPAIR_REPORT_SEED", "2", 2, 0),
    (("demo",), ("--report",), DEMO_FLAGS, "report", True, "PREFPAIR_DEMO_REPORT", "false", False, True),
    (("topics", "create"), ("--partitions", "8"), SETTINGS_FLAGS, "partitions", 8, "PREFPAIR_PARTITIONS", "6", 6, 4),
    (("broker", "status"), ("--home", "/f"), SETTINGS_FLAGS, "home", Path("/f"), "PREFPAIR_HOME", "/e", Path("/e"),
     Path(".prefpair")),
    (("report",), ("--log-level", "ERROR"), LOG_FLAGS, "log_level", "ERROR", "PREFPAIR_LOG_LEVEL", "debug", "DEBUG",
     "INFO"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("command", "tokens", "flags", "path", "from_flag", "variable", "raw", "from_env", "default"),
    PRECEDENCE,
    ids=[row[1][0] for row in PRECEDENCE],
)
def test_flag_beats_environment_beats_default(
    command: tuple[str, ...], tokens: tuple[str, ...], flags: Flags[Any], path: str, from_flag: Any,
    variable: str, raw: str, from_env: Any, default: Any,
) -> None:  # fmt: skip
    environ = {variable: raw}
    assert _read(_built(flags, PARSER.parse_args([*command, *tokens]), environ), path) == from_flag
    assert _read(_built(flags, PARSER.parse_args(list(command)), environ), path) == from_env
    with_neither = _built(flags, PARSER.parse_args(list(command)), {})
    assert _read(with_neither, path) == (default if default is not None else _read(flags.model(), path))


def test_an_invalid_variable_is_ignored_when_the_flag_is_given() -> None:
    args = PARSER.parse_args(["consume", "--grace-ms", "5"])
    assert CONSUMER_FLAGS.load(args, {"PREFPAIR_CONSUMER_GRACE_MS": "soon"}).grace_ms == 5
    with pytest.raises(ConfigError) as raised:
        CONSUMER_FLAGS.load(PARSER.parse_args(["consume"]), {"PREFPAIR_CONSUMER_GRACE_MS": "soon"})
    assert raised.value.field == "grace_ms" and raised.value.source == "PREFPAIR_CONSUMER_GRACE_MS"


@pytest.mark.parametrize(
    ("argv", "environ", "line"),
    [
        (("consume", "--grace-ms", "-1"), {},
         "prefpair consume: error: --grace-ms: Input should be greater than or equal to 0"),
        (("consume",), {"PREFPAIR_CONSUMER_BATCH_SIZE": "many"},
         "prefpair consume: error: PREFPAIR_CONSUMER_BATCH_SIZE: Input should be a valid integer, "
         "unable to parse string as an integer"),
        (("compile", "--since", "yesterday"), {},
         "prefpair compile: error: --since: expected epoch milliseconds or an ISO-8601 time, got 'yesterday'"),
        (("compile", "--split", "train"), {},
         "prefpair compile: error: --split: expected KEY=VALUE, got 'train'"),
        (("compile", "--name", "a/b"), {}, "prefpair compile: error: --name: not a folder name: 'a/b'"),
        (("serve",), {"PREFPAIR_TOKEN_SECRETS": "k:short"},
         "prefpair serve: error: PREFPAIR_TOKEN_SECRETS: a token secret needs at least 16 characters"),
        (("feedback", "list", "--limit", "0"), {},
         "prefpair feedback: error: --limit: Input should be greater than or equal to 1"),
        (("report",), {"PREFPAIR_LOG_LEVEL": "chatty"},
         "prefpair report: error: PREFPAIR_LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        (("topics", "describe", "--timeout", "0"), {},
         "prefpair topics: error: --timeout: Input should be greater than 0"),
        (("demo", "--requests", "0"), {},
         "prefpair demo: error: --requests: Input should be greater than or equal to 1"),
    ],
)  # fmt: skip
def test_an_invalid_value_is_one_line_naming_the_flag_or_variable(
    argv: tuple[str, ...], environ: dict[str, str], line: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:  # fmt: skip
    _clean_environment(monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFPAIR_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached: the config fails first
    monkeypatch.setenv("PREFPAIR_API_KEYS", "k")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert main(list(argv)) == 2
    assert capsys.readouterr().err.strip().splitlines() == [line]


def test_an_invalid_choice_is_a_usage_error_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        PARSER.parse_args(["consume", "--compression", "brotli"])
    assert exited.value.code == 2
    assert "argument --compression: invalid choice: 'brotli'" in capsys.readouterr().err


def test_help_shows_variables_and_defaults(run_cli: RunCli) -> None:
    shown = run_cli("consume", "--help", env={"COLUMNS": "200"}).stdout
    assert "--grace-ms GRACE_MS" in shown and "[PREFPAIR_CONSUMER_GRACE_MS; default 300000]" in shown
    assert "--metrics-file METRICS_FILE" in shown and "[PREFPAIR_CONSUMER_METRICS_PATH]" in shown
    assert "--compression {snappy,zstd,lz4,gzip,none}" in shown
    assert "--home HOME" in shown and "[PREFPAIR_HOME; default .prefpair]" in shown


# ---------------------------------------------------------------------------- the flags users saw ignored
def test_consume_writes_the_metrics_file_it_is_given(
    make_settings: MakeSettings, run_cli: RunCli, tmp_path: Path
) -> None:
    """``--metrics-file`` and ``--progress-interval`` used to be dropped on the way to the daemon."""
    settings = make_settings(partitions=1)
    metrics = tmp_path / "metrics.json"
    done = run_cli(
        "consume", "--until-caught-up", "--group-id", "flags", "--metrics-file", str(metrics),
        "--progress-interval", "0.5", "--log-level", "INFO", settings=settings, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert metrics.is_file() and '"group_id": "flags"' in metrics.read_text().replace('":"', '": "')
    assert metrics.with_suffix(".prom").is_file()
