"""What every JSON request body must be, whatever the endpoint: shallow enough, and valid Unicode.

**Depth.** A field's value may nest objects and arrays at most :data:`MAX_JSON_DEPTH` levels (a
string or number is 0 levels, ``{}`` or ``[]`` is 1, ``{"a": []}`` is 2). Only ``correction``
takes free-form JSON, so it is the one field whose type checks this (:func:`nesting_depth`);
every other field has a fixed, shallower shape. Before a body is parsed, :func:`depth_overflow`
scans it (a scan cannot recurse, a parser can) and refuses one nested deeper than any field may
be, even inside a batch (:data:`MAX_BODY_DEPTH`). Both refusals are the same 422, naming the
field path, so no endpoint accepts a value another refuses.

**Unicode.** JSON can spell a lone surrogate (``"\\ud800"``) that no UTF-8 text, and so no Avro
string in Kafka, can hold: :func:`~prefpair.unicode_text.invalid_text` finds one in any string or
object key, at any depth (the SDK refuses the same with the same words).
"""

from __future__ import annotations

import email.message
import json
import re
from typing import Any

MAX_JSON_DEPTH = 32
"""The deepest a field's value may nest objects and arrays."""

MAX_BODY_DEPTH = MAX_JSON_DEPTH + 3
"""The deepest a whole body may nest: a field's value inside a batch, ``{"feedback": [{"f": ...}]}``."""

TOO_DEEP = f"nested deeper than {MAX_JSON_DEPTH} levels of objects and arrays"
"""The reason a too deeply nested value is refused, wherever it is caught."""

Path = list[str | int]

# A string (running to the end of the text when unterminated, so no match ever fails and
# backtracks) or one structural character; everything else (numbers, literals, blanks) is skipped.
_TOKEN = re.compile(r'"[^"\\]*(?:\\(?:.|\Z)[^"\\]*)*(?:"|\Z)|[\[\]{}:,]', re.DOTALL)


def takes_json(content_type: str | None) -> bool:
    """Whether FastAPI parses a body of this content type as JSON (``application/json``, ``*+json``)."""
    if not content_type:
        return False  # FastAPI's strict content type: no header, no JSON
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def field_path(path: Path) -> str:
    """A path as the API names fields (``feedback.0.correction``), safe to put in a JSON answer."""
    return ".".join(str(part).encode("utf-8", "backslashreplace").decode("utf-8") for part in path)


def nesting_depth(value: Any) -> int:
    """How many levels of objects and arrays ``value`` nests (iteratively: any depth is safe)."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        pending.extend((child, depth + 1) for child in children)
    return deepest


def depth_overflow(text: str, limit: int) -> Path | None:
    """Where JSON ``text`` opens a container more than ``limit`` levels deep (its path), else None.

    A scan of tokens, not a parse: it never recurses and takes linear time on any input. Text
    that is not JSON may be misread, which is harmless: the parser refuses it afterwards.
    """
    path: Path = []  # the position in each open container: a key, or an index
    in_object: list[bool] = []
    expect_key = False
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in ("{", "["):
            if len(in_object) >= limit:
                return path
            in_object.append(token == "{")
            path.append("" if token == "{" else 0)
            expect_key = token == "{"
        elif token in ("}", "]"):
            if in_object:
                in_object.pop()
                path.pop()
            expect_key = False
        elif token == ",":
            if in_object and in_object[-1]:
                expect_key = True
            elif in_object:
                path[-1] = int(path[-1]) + 1
        elif token == ":":
            expect_key = False
        elif expect_key:
            path[-1] = _key(token)
            expect_key = False
    return None


def _key(token: str) -> str:
    try:
        key = json.loads(token)
    except ValueError:
        return token[1:-1]
    return key if isinstance(key, str) else token
