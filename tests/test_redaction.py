"""Redaction of contact details and secrets: per kind what must be caught and what must not; in compile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefpair.compile import CompileConfig, compile_dataset
from prefpair.compile.exceptions import CompileConfigError
from prefpair.compile.redaction import Pattern, luhn_valid, redactor
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


def test_a_jsonl_file_is_redacted_line_by_line_and_clean_lines_stay_byte_for_byte(tmp_path: Path) -> None:
    from prefpair.compile.redaction import redact_jsonl

    clean = '{"prompt":"Write a haiku.","chosen":"Quiet pond","rejected":"Frog\\u00e9"}\n'
    lines = [
        clean,
        '{"prompt":"mail bob@example.com","chosen":"ok","rejected":"no"}\n',
        '{"prompt":"escaped bob\\u0040example.com","chosen":"ok","rejected":"no"}\n',  # JSON-escaped @
        '{"prompt":"call (415) 555-2671 today","chosen":"x","rejected":"y"}\n',
        '{"prompt":"version 3.11.7 of 2024-05-01","chosen":"x","rejected":"y"}\n',  # digits, nothing to find
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    redacting = redactor([])
    assert redact_jsonl(path, redacting) == 3
    out = path.read_text(encoding="utf-8").splitlines(keepends=True)
    assert out[0] == clean and out[4] == lines[4]
    assert [json.loads(line)["prompt"] for line in out[1:4]] == [
        "mail <EMAIL>", "escaped <EMAIL>", "call <PHONE> today"
    ]
    assert redacting.counts == {"email": 2, "phone": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]  # nothing left aside

    untouched = tmp_path / "clean.jsonl"
    untouched.write_text(clean * 3, encoding="utf-8")
    assert redact_jsonl(untouched, redactor([])) == 0 and untouched.read_text(encoding="utf-8") == clean * 3
    with_pattern = redactor(["ticket=TICKET-[0-9]+"])
    untouched.write_text('{"prompt":"see TICKET-42"}\n', encoding="utf-8")
    assert redact_jsonl(untouched, with_pattern) == 1 and "<TICKET>" in untouched.read_text(encoding="utf-8")
