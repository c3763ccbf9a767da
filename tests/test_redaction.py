"""Redaction of contact details and secrets: per kind what must be caught and what must not; in compile."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from prefpair.compile import CompileConfig, compile_dataset
from prefpair.compile.exceptions import CompileConfigError
from prefpair.compile.redaction import TEXT_MACRO, Pattern, Redactor, install, luhn_valid, redactor
from prefpair.simulate import LogBuilder

CAUGHT = [
    ("email", "write to jane.doe+news@example.co.uk today", "write to <EMAIL> today"),
    ("email", "ops@mail-1.internal.example.com", "<EMAIL>"),
    ("phone", "call +1 415-555-2671 now", "call <PHONE> now"),
    ("phone", "or (415) 555-2671", "or <PHONE>"),
    ("phone", "in London +44 20 7946 0958", "in London <PHONE>"),
    ("phone", "text 4155552671", "text <PHONE>"),
    ("credit_card", "card 4111 1111 1111 1111 exp", "card <CREDIT_CARD> exp"),
    ("credit_card", "amex 3782-822463-10005", "amex <CREDIT_CARD>"),
    ("credit_card", "4012888888881881", "<CREDIT_CARD>"),
    ("ip_address", "from 192.168.1.20 to 8.8.8.8.", "from <IP_ADDRESS> to <IP_ADDRESS>."),
    ("ip_address", "v6 2001:db8::8a2e:370:7334 and ::1", "v6 <IP_ADDRESS> and <IP_ADDRESS>"),
    ("api_key", "OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwx1234", "OPENAI_API_KEY=<API_KEY>"),
    ("api_key", "anthropic sk-ant-api03-abcdefghijklmnopqrstuvwx", "anthropic <API_KEY>"),
    ("api_key", "aws AKIAIOSFODNN7EXAMPLE", "aws <API_KEY>"),
    ("api_key", "gh ghp_" + "a1B2" * 9, "gh <API_KEY>"),
    ("token", "Authorization: Bearer abc.def-ghi_jkl012345", "Authorization: Bearer <TOKEN>"),
    ("token", "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     "jwt <TOKEN>"),
]

NOT_CAUGHT = [
    "version 2.14.1 of the library, build 3.11.7",
    "released 2026-11-29 at 12:30:45, or 29/11/2026",
    "order id 12345678, invoice 2026-000123",
    "timestamp 1732900000000 ms",
    "a 16-digit number failing Luhn: 4111 1111 1111 1112",
    "ISBN 978-3-16-148410-0",
    "not an address: 999.1.1.1 nor 1.2.3",
    "std::vector<int> and a::b are C++ scopes; the meeting is at 10:30",
    "sk-short and AKIA123 are too short to be keys; Bearer of bad news",
    "user@localhost has no domain",
    "pi is 3.14159265358979",
]


@pytest.mark.parametrize(("kind", "text", "expected"), CAUGHT)
def test_each_kind_is_caught_and_counted(kind: str, text: str, expected: str) -> None:
    r = redactor([])
    assert r.redact(text) == expected
    assert set(r.counts) == {kind}


@pytest.mark.parametrize("text", NOT_CAUGHT)
def test_lookalikes_are_left_alone(text: str) -> None:
    r = redactor([])
    assert r.redact(text) == text
    assert sum(r.counts.values()) == 0


def test_luhn() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112") and not luhn_valid("79927398710")


def test_user_patterns_are_typed_by_their_name_and_validated() -> None:
    r = redactor(["employee=EMP-[0-9]{5}"])
    assert r.redact("badge EMP-01234, mail a@b.io") == "badge <EMPLOYEE>, mail <EMAIL>"
    assert dict(r.counts) == {"employee": 1, "email": 1}
    with pytest.raises(CompileConfigError, match="not a regular expression"):
        Pattern.parse("x=([")
    with pytest.raises(CompileConfigError, match="built-in kind"):
        Pattern.parse("email=x")
    with pytest.raises(CompileConfigError, match="empty string"):
        Pattern.parse("x=a*")
    with pytest.raises(CompileConfigError, match="redact_patterns"):
        CompileConfig.parse({"redact_patterns": {"x": "(["}})


def test_compile_redacts_by_default_and_counts_per_kind(tmp_path: Path) -> None:
    log = LogBuilder(tmp_path / "log")
    log.inference("r1", prompt="I am jane@example.com, call +1 415-555-2671. Key sk-abcdefghijklmnopqrstuvwxyz12",
                  candidates=[("a", "Sure, your card 4111 1111 1111 1111 is noted.", "m1", "v1"),
                              ("b", "Version 2.14.1 shipped on 2026-11-29; server at 10.0.0.7.", "m2", "v1")])
    log.pairwise("r1", "a", "b").commit()
    result = compile_dataset(log.log_dir, tmp_path / "out", CompileConfig.parse({"splits": {"train": 1.0}}))
    line = json.loads((result.out_dir / "trl" / "train.jsonl").read_text(encoding="utf-8"))
    assert line == {
        "prompt": "I am <EMAIL>, call <PHONE>. Key <API_KEY>",
        "chosen": "Sure, your card <CREDIT_CARD> is noted.",
        "rejected": "Version 2.14.1 shipped on 2026-11-29; server at <IP_ADDRESS>.",
    }
    manifest = json.loads(result.manifest.read_text(encoding="utf-8"))
    assert manifest["redactions"]["trl"] == {"api_key": 1, "credit_card": 1, "email": 1, "ip_address": 1, "phone": 1}
    files = {entry["path"]: entry for entry in manifest["files"]}
    from prefpair.compile.output import sha256_file

    assert files["trl/train.jsonl"]["sha256"] == sha256_file(result.out_dir / "trl" / "train.jsonl")
    card = (result.out_dir / "README.md").read_text(encoding="utf-8")
    assert "## Redaction" in card and "`trl`: api_key 1, credit_card 1, email 1, ip_address 1, phone 1" in card

    kept = compile_dataset(log.log_dir, tmp_path / "raw", CompileConfig.parse({"splits": {"train": 1.0},
                                                                               "redact": False}))
    raw = json.loads((kept.out_dir / "trl" / "train.jsonl").read_text(encoding="utf-8"))
    assert "jane@example.com" in raw["prompt"]
    assert json.loads(kept.manifest.read_text(encoding="utf-8"))["redactions"] is None


def test_texts_are_redacted_in_the_copy_and_clean_texts_stay_byte_for_byte(tmp_path: Path) -> None:
    texts = [
        "Write a haiku.\u00e9 \u0001",
        "mail bob@example.com",
        "call (415) 555-2671 today",
        "version 3.11.7 of 2024-05-01",  # digits, nothing to find
        "phone \u0664\u0661\u0665\u0665\u0665\u0665\u0662\u0666\u0667\u0661",  # Arabic-Indic digits
        None,
    ]
    con = duckdb.connect()
    con.execute("CREATE TABLE texts AS SELECT * FROM (SELECT unnest($1) AS t, generate_subscripts($1, 1) AS i)",
                [texts])

    def write(redacting: Redactor | None, name: str) -> list[str]:
        install(con, redacting)
        path = tmp_path / name
        con.execute(f"COPY (SELECT {TEXT_MACRO}(t) AS prompt FROM texts ORDER BY i) TO '{path}' (FORMAT JSON)")
        return path.read_text(encoding="utf-8").splitlines(keepends=True)

    plain = write(None, "plain.jsonl")
    redacting = redactor([])
    out = write(redacting, "redacted.jsonl")
    assert [out[i] for i in (0, 3, 5)] == [plain[i] for i in (0, 3, 5)]
    assert [json.loads(line)["prompt"] for line in out[1:3]] == ["mail <EMAIL>", "call <PHONE> today"]
    assert json.loads(out[4])["prompt"] == "phone <PHONE>"  # any decimal digit triggers, as Python's \\d
    assert redacting.counts == {"email": 1, "phone": 2}

    with_pattern = redactor(["ticket=TICKET-[0-9]+"])
    con.execute("INSERT INTO texts VALUES ('see TICKET-42', 7)")
    assert json.loads(write(with_pattern, "pattern.jsonl")[6])["prompt"] == "see <TICKET>"
    assert with_pattern.counts == {"email": 1, "phone": 2, "ticket": 1}


CHAT_LEAKS = {
    "system": "Reply to ops@example.com only.",
    "user": "My card is 4111 1111 1111 1111.",
    "assistant": "Noted; server 10.0.0.7 is down.",
    "chosen": "Call +1 415-555-2671.",
    "rejected": "Use key sk-abcdefghijklmnopqrstuvwxyz12",
}


def test_compile_redacts_every_text_of_conversational_formats(tmp_path: Path) -> None:
    log = LogBuilder(tmp_path / "log")
    turns = [{"role": "user", "content": CHAT_LEAKS["user"]}, {"role": "assistant", "content": CHAT_LEAKS["assistant"]},
             {"role": "user", "content": "And now?"}]  # fmt: skip
    log.inference(
        "r1", prompt=None, messages=turns, system_prompt=CHAT_LEAKS["system"],
        candidates=[
            {"candidate_id": "a", "model_name": "m",
             "messages": [{"role": "assistant", "content": CHAT_LEAKS["chosen"]}]},
            ("b", CHAT_LEAKS["rejected"], "m", None),
        ],
    )  # fmt: skip
    log.pairwise("r1", "a", "b").commit()
    formats = ["trl_conversational", "openai", "axolotl_chat_template", "axolotl_chatml_intel"]
    result = compile_dataset(log.log_dir, tmp_path / "out",
                             CompileConfig.parse({"splits": {"train": 1.0}, "formats": formats}))  # fmt: skip

    def line(fmt: str) -> dict[str, object]:
        lines = (result.out_dir / fmt / "train.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == 1
        return dict(json.loads(lines[0]))

    prompt = [{"role": "system", "content": "Reply to <EMAIL> only."},
              {"role": "user", "content": "My card is <CREDIT_CARD>."},
              {"role": "assistant", "content": "Noted; server <IP_ADDRESS> is down."},
              {"role": "user", "content": "And now?"}]  # fmt: skip
    chosen = {"role": "assistant", "content": "Call <PHONE>."}
    rejected = {"role": "assistant", "content": "Use key <API_KEY>"}
    assert line("trl_conversational") == {"prompt": prompt, "chosen": [chosen], "rejected": [rejected]}
    assert line("openai") == {"input": {"messages": prompt, "tools": [], "parallel_tool_calls": True},
                              "preferred_output": [chosen], "non_preferred_output": [rejected]}  # fmt: skip
    assert line("axolotl_chat_template") == {"messages": prompt, "chosen": chosen, "rejected": rejected}
    assert line("axolotl_chatml_intel") == {
        "system": "Reply to <EMAIL> only.",
        "question": "My card is <CREDIT_CARD>.\n\nNoted; server <IP_ADDRESS> is down.\n\nAnd now?",
        "chosen": "Call <PHONE>.", "rejected": "Use key <API_KEY>",
    }  # fmt: skip
    every_kind = {"api_key": 1, "credit_card": 1, "email": 1, "ip_address": 1, "phone": 1}
    manifest = json.loads(result.manifest.read_text(encoding="utf-8"))
    assert manifest["redactions"] == {fmt: every_kind for fmt in formats}
    text = json.dumps([line(fmt) for fmt in formats])
    assert not any(leak in text for leak in ("ops@", "4111", "10.0.0.7", "555-2671", "sk-abc"))


def test_redaction_without_findings_leaves_the_dataset_byte_identical(tmp_path: Path) -> None:
    log = LogBuilder(tmp_path / "log")
    for n in range(40):
        log.inference(f"r{n}", prompt=f"Question {n}: the 2026-11-29 release, version 3.11.{n}, build {n * 7919}?",
                      system_prompt="Answer in 2 lines." if n % 2 else None,
                      candidates=[("a", f"Answer {n} with digits 12 and 34.", "m1", "v1"),
                                  ("b", f"Other {n}, no \u00e9 finding \u0007 here.", "m2", "v2")])  # fmt: skip
        log.pairwise(f"r{n}", "a", "b")
    log.commit()
    formats = ["trl", "trl_conversational", "trl_unpaired", "openai", "axolotl_chatml_intel", "axolotl_chat_template"]
    base = {"splits": {"train": 0.7, "test": 0.3}, "formats": formats, "include_ids": True, "include_margin": True}
    redacted = compile_dataset(log.log_dir, tmp_path / "redacted", CompileConfig.parse(base))
    plain = compile_dataset(log.log_dir, tmp_path / "plain", CompileConfig.parse({**base, "redact": False}))
    manifest = json.loads(redacted.manifest.read_text(encoding="utf-8"))
    assert manifest["redactions"] == {fmt: {} for fmt in formats}
    names = [p.relative_to(redacted.out_dir) for p in redacted.files]
    assert names == [p.relative_to(plain.out_dir) for p in plain.files]
    assert len(redacted.files) >= 2 * len(formats)
    for mine, theirs in zip(redacted.files, plain.files, strict=True):
        assert mine.read_bytes() == theirs.read_bytes(), mine
