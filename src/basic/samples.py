"""Bundled sample emails for the demo and the tests, one per interesting category.

Each entry of ``SAMPLE_EMAILS`` can be passed as ``email_data`` as is; ``EXPECTED_CATEGORIES`` maps its
``thread_id`` to the category the offline LLM assigns.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any


def _load() -> list[dict[str, Any]]:
    text = resources.files("basic").joinpath("data/sample_emails.json").read_text(encoding="utf-8")
    raw: list[dict[str, Any]] = json.loads(text)
    return raw


_RAW = _load()

SAMPLE_EMAILS: list[dict[str, Any]] = [item["email"] for item in _RAW]
EXPECTED_CATEGORIES: dict[str, str] = {item["email"]["thread_id"]: item["expected_category"] for item in _RAW}


def sample_email(category: str) -> dict[str, Any]:
    """A fresh copy of the sample for ``category`` (question, complaint, meeting_request, spam, urgent)."""
    for item in _RAW:
        if item["expected_category"] == category:
            email: dict[str, Any] = copy.deepcopy(item["email"])
            return email
    raise KeyError(f"no sample email for category {category!r}; have {sorted(EXPECTED_CATEGORIES.values())}")
