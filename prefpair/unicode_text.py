"""Whether text is Unicode that UTF-8 can hold: Python's ``str`` (and JSON's ``"\\ud800"``) can hold a
lone surrogate, which no UTF-8 text, and so no Avro string in Kafka, can. The service and the SDK
refuse one with the same words, naming where it is."""

from __future__ import annotations

from typing import Any

Path = list[str | int]
"""Where a value sits in a nested one: keys and list indexes."""


def invalid_text(value: Any) -> tuple[Path, str] | None:
    """The first string or object key (any depth) that is not valid Unicode: its path and why."""
    pending: list[tuple[Path, Any]] = [([], value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            if not is_unicode(item):
                return path, "not valid Unicode text (it has a lone surrogate)"
        elif isinstance(item, dict):
            for key, child in item.items():
                if not is_unicode(key):
                    return path, f"key {key!a} is not valid Unicode text (it has a lone surrogate)"
                pending.append(([*path, key], child))
        elif isinstance(item, list):
            pending.extend(([*path, index], child) for index, child in enumerate(item))
    return None


def is_unicode(text: str) -> bool:
    """Whether ``text`` is Unicode text, which UTF-8 (and so Kafka, DuckDB, any reader) can hold."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
