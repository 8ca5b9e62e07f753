"""``Limiter``: caps attribute sizes so one huge value cannot get a batch rejected (HTTP 413).

A 5 MB e-mail body or a base64 image in a prompt makes Langfuse refuse the whole batch, losing every span
in it. We keep the span and cut the value instead:

- ``data:<mime>;base64,...`` URIs (payload of 64+ chars) become ``<data-uri:image/png, 123456 bytes
  omitted>`` (unless ``replace_data_uris=False``): the size and type are what a reader of a trace needs;
- any string still longer than ``max_attribute_chars`` is cut to that length and gets
  ``…[truncated by otel-basic: original 5242880 chars]`` appended.

A truncated JSON ``input.value`` is no longer valid JSON; Langfuse then shows it as text, which is
acceptable for an oversized value. Spans are copied, never dropped; spans within limits pass untouched.
The road runs it right after masking, so masking sees whole values (a cut must not split an address).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.util.types import AnyValue

from otel_basic.spancopy import transform_span

__all__ = ["DEFAULT_MAX_ATTRIBUTE_CHARS", "Limiter", "truncation_marker"]

DEFAULT_MAX_ATTRIBUTE_CHARS = 16384
_DATA_URI_MIN_CHARS = 64 + len("data:;base64,")

_DATA_URI = re.compile(r"data:([\w.+-]+/[\w.+-]+)?((?:;[\w.+-]+=[\w.+-]+)*);base64,([A-Za-z0-9+/_-]{64,}(?:={0,2}))")

_log = logging.getLogger("otel_basic")


def truncation_marker(original_chars: int) -> str:
    """What is appended to a truncated value."""
    return f"…[truncated by otel-basic: original {original_chars} chars]"


def _data_uri_placeholder(m: re.Match[str]) -> str:
    payload = m.group(3)
    size = len(payload) * 3 // 4 - payload.count("=")
    return f"<data-uri:{m.group(1) or 'application/octet-stream'}, {size} bytes omitted>"


class Limiter:
    """Copies spans with oversized string values cut down; spans within limits are returned as they are."""

    def __init__(
        self,
        max_attribute_chars: int = DEFAULT_MAX_ATTRIBUTE_CHARS,
        replace_data_uris: bool = True,
    ) -> None:
        if max_attribute_chars < 1:
            raise ValueError("max_attribute_chars must be positive")
        self.max_attribute_chars = max_attribute_chars
        self.replace_data_uris = replace_data_uris

    def limit_span(self, span: ReadableSpan) -> ReadableSpan:
        """``span`` within limits. Never raises: a size check must not lose a span (the road's 413
        split still guards the wire)."""
        try:
            return transform_span(
                span,
                self._limit_mapping,
                lambda _n, a: self._limit_mapping(a),
                self._limit_mapping,
                self._limit_str_or_none,
            )
        except Exception:
            _log.debug("payload limit failed for span %r; keeping it unchanged", span.name, exc_info=True)
            return span

    def limit_value(self, value: AnyValue) -> AnyValue:
        """``value`` within limits; the same object when nothing had to change."""
        if isinstance(value, str):
            return self._limit_str(value)
        if isinstance(value, (tuple, list)):
            items = [self.limit_value(v) for v in value]
            if all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return tuple(items) if isinstance(value, tuple) else items
        if isinstance(value, Mapping):
            masked = self._limit_mapping(value)
            return value if masked is None else masked
        return value

    def _limit_mapping(self, attrs: Mapping[str, AnyValue]) -> dict[str, AnyValue] | None:
        # Runs for every attribute of every span: short strings and scalars cost one type and length check.
        changes: dict[str, AnyValue] | None = None
        floor = min(self.max_attribute_chars, _DATA_URI_MIN_CHARS) if self.replace_data_uris else None
        limit = self.max_attribute_chars
        for key, value in attrs.items():
            if value.__class__ is str:
                n = len(value)
                if n <= limit and (floor is None or n < floor):
                    continue
                new: AnyValue = self._limit_str(value)
            elif isinstance(value, (tuple, list, Mapping)):
                new = self.limit_value(value)
            else:
                continue
            if new is not value:
                if changes is None:
                    changes = {}
                changes[key] = new
        if not changes:
            return None
        return {k: changes.get(k, v) for k, v in attrs.items()}

    def _limit_str_or_none(self, text: str) -> str | None:
        new = self._limit_str(text)
        return None if new is text else new

    def _limit_str(self, text: str) -> str:
        if len(text) < _DATA_URI_MIN_CHARS and len(text) <= self.max_attribute_chars:
            return text
        new = text
        if self.replace_data_uris and ";base64," in text:
            new = _DATA_URI.sub(_data_uri_placeholder, text)
        if len(new) > self.max_attribute_chars:
            new = new[: self.max_attribute_chars] + truncation_marker(len(text))
        return new
