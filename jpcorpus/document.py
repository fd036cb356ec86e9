"""The one document type that flows through every corpus stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Document:
    """One document: its text, its id when the input had one, and everything else.

    ``metadata`` holds every other field of the input record unchanged (the id
    field included, with its original JSON type), so that ``jpcorpus normalize``
    writes them back out as they came. ``id`` is that id as a string, or None
    when the record had none. ``source`` is ``path:line`` (1-based; plain-text
    files use line 1) and is only used in messages.
    """

    text: str
    id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def to_record(self, text_key: str = "text") -> dict[str, Any]:
        """The JSON record for this document: the input's fields, text replaced.

        >>> Document("吾輩は猫である。", "1", {"id": 1, "title": "猫"}).to_record()
        {'id': 1, 'text': '吾輩は猫である。', 'title': '猫'}
        """
        record: dict[str, Any] = {}
        if "id" in self.metadata:
            record["id"] = self.metadata["id"]
        record[text_key] = self.text
        for key, value in self.metadata.items():
            record.setdefault(key, value)
        return record
