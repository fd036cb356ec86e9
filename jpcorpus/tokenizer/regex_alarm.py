"""transformers' false "incorrect regex pattern" alarm, checked and dropped for Qwen2's own pre-tokenizer.

transformers 4.57.3 added a check for Mistral tokenizers saved with a wrong
pre-tokenizer regex. It looks only at ``config.json`` beside the tokenizer:
every local directory whose tokenizer has more than 100,000 entries and whose
``config.json`` was written by transformers 4.57.3-4.x (or names no version)
gets::

    The tokenizer you are loading from '...' with an incorrect regex pattern: ...
    This will lead to incorrect tokenization. You should set the
    `fix_mistral_regex=True` flag when loading this tokenizer to fix this issue.

That is every model ``trainer export`` writes with NeMo's transformers 4.57.6,
and every random model a ``from_scratch`` run saves. The regex itself is never
looked at, and nothing is changed unless ``fix_mistral_regex=True`` is passed
(which would install Mistral's regex and change Qwen's ids).

:func:`regex_alarm_checked` looks at it: while a tokenizer is loaded from a
directory whose ``tokenizer.json`` splits with exactly Qwen2's pattern
(:data:`~jpcorpus.tokenizer.builtin_qwen.QWEN2_PATTERN`, the pattern of the
official Qwen2.5 files, whose ids ``tests/test_tokenizer.py`` compares with the
official tokenizer's), that one message is dropped (logged at debug level). For
any other tokenizer it is left alone. The directory is read only if the
message actually comes.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

ALARM_TEXT = "fix_mistral_regex"
TRANSFORMERS_LOGGER = "transformers.tokenization_utils_base"


def has_qwen2_pattern(directory: str | Path) -> bool:
    """True when ``directory/tokenizer.json`` pre-tokenizes with exactly Qwen2's split regex."""
    from jpcorpus.tokenizer.builtin_qwen import QWEN2_PATTERN

    try:
        spec = json.loads((Path(directory) / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return QWEN2_PATTERN in _split_patterns(spec.get("pre_tokenizer"))


def _split_patterns(node) -> list[str]:
    if not isinstance(node, dict):
        return []
    if node.get("type") == "Split":
        pattern = node.get("pattern") or {}
        return [pattern.get("Regex")] if isinstance(pattern, dict) and "Regex" in pattern else []
    return [p for child in node.get("pretokenizers") or [] for p in _split_patterns(child)]


class _DropFalseAlarm(logging.Filter):
    def __init__(self, directory: Path):
        super().__init__()
        self.directory = directory
        self._qwen: bool | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if ALARM_TEXT not in record.getMessage():
            return True
        if self._qwen is None:
            self._qwen = has_qwen2_pattern(self.directory)
        if self._qwen:
            log.debug("%s: dropped transformers' Mistral-regex warning: the tokenizer splits with Qwen2's own "
                      "pattern (see jpcorpus/tokenizer/regex_alarm.py)", self.directory)
        return not self._qwen


@contextmanager
def regex_alarm_checked(directory: str | Path | None) -> Iterator[None]:
    """While active, transformers' Mistral-regex warning about ``directory`` is dropped if the regex is Qwen2's."""
    if directory is None:
        yield
        return
    logger = logging.getLogger(TRANSFORMERS_LOGGER)
    check = _DropFalseAlarm(Path(directory))
    logger.addFilter(check)
    try:
        yield
    finally:
        logger.removeFilter(check)
