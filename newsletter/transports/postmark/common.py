"""What Postmark's answers share: the JSON helpers that sending, sync and webhooks read them with."""

from __future__ import annotations

import json
from typing import Any

METADATA_KEY = "newsletter-key"


def _error(data: Any) -> tuple[int | None, str]:
    if not isinstance(data, dict):
        return None, ""
    code = data.get("ErrorCode")
    return (code if type(code) is int else None), str(data.get("Message") or "")


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeError):
        return None
