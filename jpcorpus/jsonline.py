"""One JSON Lines record parsed, or the reason it cannot be used; never an exception of its own.

``json.loads`` accepts things a corpus reader must not pass on, and raises
things a reader does not expect:

- an escaped lone surrogate (``"\\ud800"``, half of an emoji cut in two) is valid
  JSON but not a Unicode character: the string cannot be encoded as UTF-8, so the
  tokenizer and every writer downstream fail on it (``invalid_unicode``). A valid
  pair (``"\\ud83d\\ude00"``) decodes to its one character as usual;
- deep nesting raises ``RecursionError``, and nesting that loads may still fail
  to be written back deeper in the call stack, so records are limited to
  :data:`MAX_DEPTH` levels (``too_deeply_nested``);
- an integer of more than 4,300 digits raises a bare ``ValueError``
  (``number_too_large``).

:func:`loads_record` turns each of these, and every ``JSONDecodeError``, into a
:class:`RecordError` with a stable reason and a message that says what to do.
The checks cost nothing on ordinary lines: they start only when a substring
search finds a surrogate escape or many brackets.

>>> loads_record('{"text": "\\\\ud83d\\\\ude00"}')["text"] == "\\U0001F600"
True
>>> loads_record('{"text": "\\\\ud800x"}')
Traceback (most recent call last):
...
jpcorpus.jsonline.RecordError: escaped lone surrogate \\ud800 at column 11: ...
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 100  # levels of arrays and objects; a text corpus record needs two or three

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)")


class RecordError(ValueError):
    """A line that is not a usable record: ``reason`` is a stable snake_case string."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


def loads_record(line: str) -> Any:
    """``json.loads(line)``, or :class:`RecordError` for what a corpus reader must refuse."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RecordError("malformed_json", _decode_message(exc)) from None
    except RecursionError:
        raise RecordError("too_deeply_nested", _DEPTH_MESSAGE) from None
    except ValueError as exc:  # an integer beyond Python's int/str conversion limit
        raise RecordError("number_too_large", f"a number is too long to read ({str(exc).split(';')[0]}); "
                          "write such values as strings") from None
    if _SURROGATE_ESCAPE.search(line) and _has_surrogate(value):  # (a duplicate key may have dropped it)
        lone = lone_surrogate(line)
        if lone is not None:
            escape, column = lone
            raise RecordError(
                "invalid_unicode",
                f"escaped lone surrogate {escape} at column {column}: valid JSON, but half of a UTF-16 pair "
                "without the other half is not a Unicode character (a broken export or an emoji cut in two); "
                "repair the producer or drop the record")
    if (line.count("[") + line.count("{")) > MAX_DEPTH and depth(value) > MAX_DEPTH:
        raise RecordError("too_deeply_nested", _DEPTH_MESSAGE)
    return value


_DEPTH_MESSAGE = (f"arrays/objects nested more than {MAX_DEPTH} levels deep: not a text record; "
                  "flatten the record")


def _decode_message(exc: json.JSONDecodeError) -> str:
    what = exc.msg.removesuffix(" at")  # "Invalid control character at" + " at column": say "at" once
    hint = ""
    if "control character" in what:
        hint = "; a raw tab or line break inside a string must be written \\t or \\n"
    elif "BOM" in what:
        hint = "; a byte-order mark is allowed only at the start of the file"
    return f"not valid JSON ({what} at column {exc.colno}){hint}"


def lone_surrogate(line: str) -> tuple[str, int] | None:
    r"""The first ``\uD8xx``-``\uDFxx`` escape of ``line`` that is not half of a pair, and its 1-based column.

    >>> lone_surrogate(r'{"a": "\ud83d\ude00 \udc00"}')
    ('\\udc00', 21)
    >>> lone_surrogate(r'{"a": "\\ud800"}') is None  # an escaped backslash, then the letters ud800
    True
    """
    pending = None  # a high surrogate waiting for its low half: (escape, column, end)
    for match in _ESCAPE.finditer(line):
        code = int(match.group(1), 16) if match.group(1) else None
        if pending is not None:
            if code is not None and 0xDC00 <= code <= 0xDFFF and match.start() == pending[2]:
                pending = None
                continue
            return pending[:2]
        if code is None or not 0xD800 <= code <= 0xDFFF:
            continue
        if code >= 0xDC00:
            return match.group(0), match.start() + 1
        pending = (match.group(0), match.start() + 1, match.end())
    return pending[:2] if pending is not None else None


def _has_surrogate(value: Any) -> bool:
    """Whether a decoded value holds a lone surrogate in any string, key or value (no recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if any(0xD800 <= ord(c) <= 0xDFFF for c in item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, without recursion (a scalar is 0).

    >>> depth([1, {"a": [2]}]), depth("x")
    (3, 0)
    """
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level <= MAX_DEPTH:
            stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest
