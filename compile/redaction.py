"""Redaction of contact details and secrets in compiled datasets: typed placeholders, counted per kind.

Detectors, each replacing what it finds by a placeholder of its kind (``<EMAIL>``, ...):

- ``api_key``: ``sk-...`` (OpenAI, Anthropic ``sk-ant-...``), ``AKIA``/``ASIA`` + 16 (AWS access key
  ids), ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_``/``github_pat_`` (GitHub), ``xox[abprs]-`` (Slack),
  ``AIza`` + 35 (Google);
- ``token``: JSON Web Tokens (three base64url parts, the first two starting ``eyJ``) and the
  credential after ``Bearer``;
- ``email``;
- ``credit_card``: 13 to 19 digits (spaces or dashes between groups allowed) passing the Luhn check;
- ``ip_address``: IPv4 and IPv6 candidates confirmed by :mod:`ipaddress` (``999.1.1.1`` is not one;
  an IPv6 one needs a digit, so ``a::b`` is not one);
- ``phone``: Google's libphonenumber (``phonenumbers``) at its STRICT_GROUPING leniency (valid
  numbers whose digit groups follow the number's own format), which refuses dates,
  times, version numbers and digit runs no numbering plan assigns; numbers without ``+`` are read
  in :data:`DEFAULT_REGION`;
- user patterns, ``NAME=REGEX``: replaced by ``<NAME>`` (upper case), counted as ``NAME``.

Order matters: secrets first (a key can hold digit runs that look like a phone number), then
emails (an address can hold an IP-like part), cards before phones (a card number is digits too).

The compile runs it inside the DuckDB query that makes each format's lines (:func:`install`): every text a format
writes (prompts, system prompts, message contents, completions) goes through the ``redacted_text``
macro, ``CASE WHEN regexp_matches(t, TRIGGER) THEN prefpair_redact(t) ELSE t END``, where the
trigger (RE2, on DuckDB's threads) is what a built-in detector needs to find anything and
``prefpair_redact`` is a Python UDF calling :meth:`Redactor.redact`. Texts without findings are
written exactly as without redaction; ids and provenance columns are not redacted.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import duckdb
import phonenumbers
import pyarrow as pa
from duckdb.func import PythonUDFType

from prefpair.compile.exceptions import CompileConfigError

DEFAULT_REGION = "US"
"""Region of phone numbers written without a country code (``+``)."""

KINDS = ("api_key", "token", "email", "credit_card", "ip_address", "phone")
"""Built-in kinds, in the order they are applied."""

_API_KEY = re.compile(
    r"\b(?:sk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35})"
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")
_BEARER = re.compile(r"(?i)(\bBearer\s+)[A-Za-z0-9._~+/-]{8,}=*")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"(?<![\d.-])\d(?:[ -]?\d){12,18}(?![\d]|[.-]\d)")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)")
_IPV6 = re.compile(r"(?<![0-9A-Za-z:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Za-z:])")
_PHONE_CANDIDATE = re.compile(r"(?:\+|\(|\b)\d[\d ().\-]{5,22}\d\b")
"""Runs of digits and phone punctuation that could hold a number: only these go to (slow) libphonenumber."""
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_KEY_PREFIXES = ("sk-", "AKIA", "ASIA", "gh", "github_pat_", "xox", "AIza")
TEXT_TRIGGER = r"\p{Nd}\p{Nd}|@|eyJ|earer|sk-|AKIA|ASIA|gh[pousr]_|github_pat_|xox|AIza"
"""What a text must hold for a built-in detector to find anything in it (RE2 syntax, run by DuckDB):
the cheap tests of :meth:`Redactor.redact` (``\\p{Nd}`` is Python's ``\\d`` on text: any decimal digit)."""
_DIGIT_RUN = re.compile(r"\d\d")
_PLACEHOLDER = {kind: f"<{kind.upper()}>" for kind in KINDS}


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits (the check every card number passes)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _is_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def _is_ipv6(candidate: str) -> bool:
    """An IPv6 address with a digit in it: ``a::b`` (C++ scopes) parses too, but is not taken for one."""
    return any(char.isdigit() for char in candidate) and _is_ip(candidate)


def _is_card(candidate: str) -> bool:
    digits = re.sub(r"[ -]", "", candidate)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


@dataclass(frozen=True)
class Pattern:
    """A user-supplied detector: matches of ``regex`` become ``<NAME>``."""

    name: str
    regex: re.Pattern[str]

    @classmethod
    def parse(cls, spec: str, field_name: str = "redact_patterns") -> Pattern:
        """``NAME=REGEX``; a bad name or regex is a CompileConfigError naming the field."""
        name, sep, regex = spec.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,31}", name):
            raise CompileConfigError(field_name, f"expected NAME=REGEX with NAME a word, got {spec!r}")
        if name.lower() in KINDS:
            raise CompileConfigError(field_name, f"{name!r} is a built-in kind; name your pattern otherwise")
        try:
            compiled = re.compile(regex)
        except re.error as exc:
            raise CompileConfigError(field_name, f"{regex!r} is not a regular expression: {exc}") from None
        if compiled.search("") is not None:
            raise CompileConfigError(field_name, f"{regex!r} matches the empty string")
        return cls(name.lower(), compiled)


@dataclass
class Redactor:
    """Applies every detector to text; ``counts`` adds up what it replaced, per kind."""

    patterns: tuple[Pattern, ...] = ()
    region: str = DEFAULT_REGION
    counts: Counter[str] = field(default_factory=Counter)

    def redact(self, text: str) -> str:
        """``text`` with every finding replaced by its typed placeholder."""
        if any(prefix in text for prefix in _KEY_PREFIXES):  # cheap test first: most text holds no key
            text = self._sub("api_key", _API_KEY, text)
        if "eyJ" in text:
            text = self._sub("token", _JWT, text)
        if "earer" in text:
            text = self._sub("token", _BEARER, text, keep_group=1)
        if "@" in text:
            text = self._sub("email", _EMAIL, text)
        if _DIGIT_RUN.search(text) is None:  # cards, addresses and phones all need a digit run
            return self._custom(text)
        text = self._sub("credit_card", _CARD, text, check=_is_card)
        if text.count(".") >= 3:
            text = self._sub("ip_address", _IPV4, text, check=_is_ip)
        if text.count(":") >= 2:
            text = self._sub("ip_address", _IPV6, text, check=_is_ipv6)
        return self._custom(self._phones(text))

    def _custom(self, text: str) -> str:
        for pattern in self.patterns:
            text = self._sub(pattern.name, pattern.regex, text, placeholder=f"<{pattern.name.upper()}>")
        return text

    def _sub(
        self,
        kind: str,
        regex: re.Pattern[str],
        text: str,
        *,
        check: Callable[[str], bool] | None = None,
        keep_group: int | None = None,
        placeholder: str | None = None,
    ) -> str:
        replacement = placeholder or _PLACEHOLDER[kind]

        def replace(match: re.Match[str]) -> str:
            if check is not None and not check(match.group(0)):
                return match.group(0)
            self.counts[kind] += 1
            return (match.group(keep_group) if keep_group else "") + replacement

        return regex.sub(replace, text)

    def _phones(self, text: str) -> str:
        return _PHONE_CANDIDATE.sub(self._phones_in, text)

    def _phones_in(self, candidate: re.Match[str]) -> str:
        """Numbers within one candidate run (none when it has fewer than 7 digits: no plan has shorter ones)."""
        text, found = _phone_numbers(candidate.group(0), self.region)
        if found:  # a kind is counted only when found: the manifest lists no zero counts
            self.counts["phone"] += found
        return text


@functools.lru_cache(maxsize=65536)
def _phone_numbers(text: str, region: str) -> tuple[str, int]:
    """``text`` with its phone numbers replaced, and how many; cached, as dates and ids recur."""
    if sum(char.isdigit() for char in text) < 7 or _DATE.fullmatch(text):
        return text, 0
    strict = phonenumbers.Leniency.STRICT_GROUPING
    matches = list(phonenumbers.PhoneNumberMatcher(text, region, leniency=strict))
    for match in reversed(matches):
        text = text[: match.start] + _PLACEHOLDER["phone"] + text[match.end :]
    return text, len(matches)


def redactor(patterns: Iterable[str]) -> Redactor:
    """A redactor with the built-in detectors and the user's ``NAME=REGEX`` patterns."""
    return Redactor(tuple(Pattern.parse(spec) for spec in patterns))


TEXT_MACRO = "redacted_text"
"""The macro every text a format writes goes through (:func:`install` defines it)."""
MESSAGES_MACRO = "redacted_messages"
"""The macro every ``[{role, content}]`` list a format writes goes through (its contents redacted)."""
UDF = "prefpair_redact"


def install(con: duckdb.DuckDBPyConnection, redacting: Redactor | None) -> None:
    """Define :data:`TEXT_MACRO` and :data:`MESSAGES_MACRO` on ``con``: the identity without a
    redactor; with one, texts go to :data:`UDF` (``redacting.redact``, counting into it), all of
    them with user patterns, else only those :data:`TEXT_TRIGGER` matches.

    Call it again (before the next format is written) to count it on another redactor.
    """
    messages_body = "ms"
    if redacting is None:
        text_body = "t"
    else:
        with contextlib.suppress(duckdb.InvalidInputException):  # not registered yet
            con.remove_function(UDF)
        con.create_function(UDF, _udf(redacting), ["varchar"], "varchar", type=PythonUDFType.ARROW, side_effects=True)
        text_body = f"{UDF}(t)" if redacting.patterns else (
            f"CASE WHEN regexp_matches(t, '{TEXT_TRIGGER}') THEN {UDF}(t) ELSE t END"
        )  # fmt: skip
        messages_body = f"list_transform(ms, lambda m: {{'role': m.role, 'content': {TEXT_MACRO}(m.content)}})"
    con.execute(f"CREATE OR REPLACE TEMP MACRO {TEXT_MACRO}(t) AS {text_body}")
    con.execute(f"CREATE OR REPLACE TEMP MACRO {MESSAGES_MACRO}(ms) AS {messages_body}")


def _udf(redacting: Redactor) -> Callable[[pa.Array], pa.Array]:
    """The UDF over a batch of texts: each redacted by a redactor of its own, whose counts are added
    to ``redacting``'s under a lock (DuckDB may call it from several threads)."""
    lock = threading.Lock()

    def redact_batch(texts: pa.Array) -> pa.Array:
        batch = Redactor(redacting.patterns, redacting.region)
        out = [None if text is None else batch.redact(text) for text in texts.to_pylist()]
        with lock:
            redacting.counts.update(batch.counts)
        return pa.array(out, pa.string())

    return redact_batch


def card_section(per_format: dict[str, dict[str, int]]) -> str:
    """The dataset card's paragraph on redaction (appended after the rest of the card)."""
    found = "; ".join(
        f"`{fmt}`: " + ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))
        for fmt, counts in per_format.items() if counts
    ) or "nothing was found"
    return (
        "\n## Redaction\n\nEmails, phone numbers, credit-card numbers (Luhn-checked), IP addresses, API keys and "
        "tokens in prompts and completions were replaced by typed placeholders such as `<EMAIL>` "
        f"(`prefpair compile --no-redact` turns this off). Replaced, per format: {found}.\n"
    )
