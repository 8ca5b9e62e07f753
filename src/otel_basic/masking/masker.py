"""The Masker: rewrites attribute values so personal data and secrets never leave the process.

Levels
    ``"detectors"`` (default): every string value (and string inside a sequence, mapping or JSON document)
    runs through the detectors; each hit becomes a typed token ``<email:1f3a9c>``.
    ``"hide"``: content attributes (prompts, messages, ``input.value``/``output.value``, log bodies,
    exception messages) become ``"<hidden>"``; the detectors still run on everything else.
    ``"off"``: values pass unchanged (the pipeline does not even install the exporter wrapper).

Tokens are ``<label:hash>`` where hash is the first ``hash_chars`` hex digits of
``sha256(salt + normalized value)``: the same e-mail address (case-insensitively), card or phone number
always maps to the same token, so grouping by user and "same sender in two places" still work in Langfuse
while the value itself is gone.

Salt: by default a random salt is drawn once per process. Tokens are then stable within a process (and so
within a trace) but differ across restarts and replicas, and nobody can brute-force a 6-hex hash of a phone
number back without the salt. Pass a fixed secret ``salt`` (e.g. from ``OTEL_BASIC_MASK_SALT``) to keep
tokens stable across processes; ``salt=""`` makes them unsalted (tests only: short hashes of phone numbers
are easy to reverse).

Keys: ``allow_keys`` (fnmatch globs) are never touched: ids, counters, model names, span kinds.
``user.id`` is deliberately NOT allow-listed: the email workflow sets it to the sender's address, so it is
masked to a stable ``<email:..>`` token, which keeps Langfuse's per-user grouping while dropping the
address. ``session.id`` is allow-listed (a thread id, not personal data); do not put addresses in it.
Values under keys that name a secret (``password``, ``api_key``, ``authorization``, ``*.token``...) are
replaced whole by ``<secret:..>``, also inside JSON documents.

JSON: a string that parses as a JSON object/array is masked value by value (object keys too: a state dump
can be keyed by address) and re-serialized compactly with ``ensure_ascii=False``, so it stays valid JSON.
Unchanged documents are returned as the original string.

Failure: :meth:`Masker.mask_value` never raises. If masking one value fails (a bad hook, a pathological
document), that value becomes ``"<masking-error>"``: fail closed, never export the raw value. The first
failure is logged as a warning, later ones at debug level; :attr:`Masker.error_count` counts them.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Literal, cast

from opentelemetry.util.types import AnyValue

from otel_basic.masking.detectors import BUILTIN_DETECTORS, DEFAULT_DETECTORS, Detector, Hit

__all__ = [
    "DEFAULT_ALLOW_KEYS",
    "DEFAULT_EVENT_ALLOW_KEYS",
    "DEFAULT_EVENT_HIDE_KEYS",
    "DEFAULT_HIDE_KEYS",
    "ERROR_PLACEHOLDER",
    "HIDDEN",
    "Level",
    "Masker",
]

_log = logging.getLogger("otel_basic.masking")

Level = Literal["detectors", "hide", "off"]
_LEVELS: tuple[str, ...] = ("detectors", "hide", "off")

HIDDEN = "<hidden>"
ERROR_PLACEHOLDER = "<masking-error>"

_PROCESS_SALT = secrets.token_hex(16)
"""Drawn once per process: stable tokens within the process, unguessable outside it."""

DEFAULT_ALLOW_KEYS: tuple[str, ...] = (
    # OpenInference structure, counters and model identity
    "openinference.span.kind",
    "input.mime_type",
    "output.mime_type",
    "llm.token_count.*",
    "llm.cost.*",
    "llm.model_name",
    "llm.request.model_name",
    "llm.response.model_name",
    "llm.provider",
    "llm.system",
    "llm.finish_reason",
    "llm.input_messages.*.message.role",
    "llm.output_messages.*.message.role",
    "*.tool_call.id",
    "*.tool_call.function.name",
    "embedding.model_name",
    "tool.name",
    "tool.id",
    "graph.node.id",
    "graph.node.parent_id",
    "graph.node.name",
    "agent.name",
    # sessions and Langfuse structure (user.id is masked on purpose, see the module docstring)
    "session.id",
    "langfuse.session.id",
    "langfuse.trace.name",
    "langfuse.observation.type",
    "langfuse.observation.level",
    "langfuse.observation.model.name",
    "langfuse.observation.usage_details",
    "langfuse.environment",
    "langfuse.release",
    "langfuse.version",
    "langfuse.internal.*",
    # GenAI semantic conventions
    "gen_ai.system",
    "gen_ai.operation.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.response.id",
    "gen_ai.usage.*",
    # generic OTel
    "service.*",
    "telemetry.*",
    "otel.*",
    "code.*",
    "thread.*",
    "llamaindex.*id*",
    "otel_basic.*",
)
"""Attribute keys (fnmatch globs) that are never masked: ids, counters and model names."""

DEFAULT_HIDE_KEYS: tuple[str, ...] = (
    "input.value",
    "output.value",
    "llm.prompts",
    "llm.prompts.*",
    "llm.prompt_template.variables",
    "llm.input_messages.*.message.content*",
    "llm.input_messages.*.message.tool_calls.*.tool_call.function.arguments",
    "llm.input_messages.*.message.function_call_arguments_json",
    "llm.output_messages.*.message.content*",
    "llm.output_messages.*.message.tool_calls.*.tool_call.function.arguments",
    "llm.output_messages.*.message.function_call_arguments_json",
    "llm.function_call",
    "llm.choices*",
    "tool.parameters",
    "retrieval.documents.*.document.content",
    "embedding.embeddings.*.embedding.text",
    "gen_ai.prompt*",
    "gen_ai.completion*",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "langfuse.observation.input",
    "langfuse.observation.output",
    "langfuse.trace.input",
    "langfuse.trace.output",
)
"""Content attribute keys replaced by ``"<hidden>"`` at level ``"hide"``."""

DEFAULT_EVENT_ALLOW_KEYS: tuple[str, ...] = (
    "exception.type",
    "exception.escaped",
    "log.level",
    "log.severity",
    "log.logger",
    "logger.name",
    "level",
    "severity*",
    "code.*",
    "thread.*",
    "otel.*",
)
"""Event attribute keys never masked (in addition to ``allow_keys``)."""

DEFAULT_EVENT_HIDE_KEYS: tuple[str, ...] = (
    "message",
    "body",
    "log.message",
    "log.body",
    "event.body",
    "exception.message",
)
"""Event attribute keys replaced by ``"<hidden>"`` at level ``"hide"`` (log bodies, exception messages)."""

_SECRET_KEY = re.compile(
    r"(?i)(?:^|[._-])(?:password|passwd|pwd|secret|client[_-]?secret|api[_-]?key|apikey|access[_-]?key"
    r"|secret[_-]?key|private[_-]?key|(?:access|refresh|auth|id)[_-]?token|token|authorization"
    r"|proxy-authorization|cookie|set-cookie|x-api-key)$"
)

_NORMAL, _ALLOW, _HIDE, _SECRET = 0, 1, 2, 3
_MAX_DEPTH = 32
_KEY_CACHE_MAX = 8192

Replacer = Callable[[re.Match[str]], str]


def _globs(patterns: Iterable[str]) -> re.Pattern[str]:
    parts = [fnmatch.translate(p) for p in patterns]
    return re.compile("|".join(f"(?:{p})" for p in parts) if parts else r"(?!)")


@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def _resolve_detectors(detectors: Iterable[Detector | str] | None) -> tuple[Detector, ...]:
    if detectors is None:
        return DEFAULT_DETECTORS
    out: list[Detector] = []
    for d in detectors:
        if isinstance(d, str):
            if d not in BUILTIN_DETECTORS:
                raise ValueError(f"unknown detector {d!r}; built-in: {', '.join(BUILTIN_DETECTORS)}")
            out.append(BUILTIN_DETECTORS[d])
        else:
            out.append(d)
    return tuple(out)


class Masker:
    """Masks attribute values; see the module docstring for levels, tokens, salt and allow-list."""

    def __init__(
        self,
        level: Level | str = "detectors",
        detectors: Iterable[Detector | str] | None = None,
        extra_patterns: Mapping[str, str | re.Pattern[str]] | None = None,
        hook: Callable[[str, str], str] | None = None,
        allow_keys: Iterable[str] = DEFAULT_ALLOW_KEYS,
        salt: str | None = None,
        *,
        hide_keys: Iterable[str] = DEFAULT_HIDE_KEYS,
        event_allow_keys: Iterable[str] = DEFAULT_EVENT_ALLOW_KEYS,
        event_hide_keys: Iterable[str] = DEFAULT_EVENT_HIDE_KEYS,
        hash_chars: int = 6,
    ) -> None:
        if level not in _LEVELS:
            raise ValueError(f"masking level must be one of {', '.join(_LEVELS)}; got {level!r}")
        if not 4 <= hash_chars <= 64:
            raise ValueError("hash_chars must be between 4 and 64")
        self.level: Level = cast(Level, level)
        self.hook = hook
        self.error_count = 0
        self._salt = _PROCESS_SALT if salt is None else salt
        self._hash_chars = hash_chars
        self._token: Callable[[str, str], str] = functools.lru_cache(maxsize=16384)(self._make_token)

        # Custom patterns run first, so built-in detectors never see (or re-mask) their tokens.
        passes: list[tuple[Callable[[str], bool] | None, re.Pattern[str], Replacer]] = []
        for label, pattern in (extra_patterns or {}).items():
            compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
            passes.append((None, compiled, self._replacer(label, _whole_match)))
        for det in _resolve_detectors(detectors):
            passes.append((det.precheck, det.pattern, self._replacer(det.label, det.find)))
        self._passes = tuple(passes)

        allow = list(allow_keys)
        self._allow = _globs(allow)
        self._hide = _globs(hide_keys)
        self._event_allow = _globs([*allow, *event_allow_keys])
        self._event_hide = _globs(event_hide_keys)
        self._key_cache: dict[str, int] = {}
        self._event_key_cache: dict[str, int] = {}

    # --- public API ------------------------------------------------------------------------------------

    def mask_value(self, key: str, value: AnyValue) -> AnyValue:
        """The value to export for span attribute ``key``; never raises (fails closed)."""
        if self.level == "off":
            return value
        try:
            return self._mask_any(self._classify(key, event=False), key, value)
        except Exception as exc:
            return self._failed(key, exc)

    def mask_attributes(self, attrs: Mapping[str, AnyValue] | None) -> dict[str, AnyValue]:
        """A masked copy of span attributes."""
        if not attrs:
            return {}
        masked = self._mask_mapping(attrs, event=False)
        return dict(attrs) if masked is None else masked

    def mask_event_attributes(self, name: str, attrs: Mapping[str, AnyValue] | None) -> dict[str, AnyValue]:
        """A masked copy of event attributes (log records, exceptions), with event hide/allow rules."""
        if not attrs:
            return {}
        masked = self._mask_mapping(attrs, event=True)
        return dict(attrs) if masked is None else masked

    def mask_text(self, text: str) -> str:
        """Run the detectors (and JSON handling) over free text, whatever the level's key rules."""
        if self.level == "off":
            return text
        return self._mask_text(text, 0)

    # --- used by MaskingExporter: ``None`` means "unchanged", so unchanged spans are not copied ------------

    def _mask_mapping(self, attrs: Mapping[str, AnyValue], *, event: bool) -> dict[str, AnyValue] | None:
        if self.level == "off":
            return None
        changes: dict[str, AnyValue] = {}
        hide_message: str | None = None
        if event and self.level == "hide":
            msg = attrs.get("exception.message")
            if isinstance(msg, str) and msg:
                hide_message = msg
        for key, value in attrs.items():
            if value is None or isinstance(value, (bool, int, float)):
                continue
            cls = self._classify(key, event=event)
            if cls == _ALLOW:
                continue
            try:
                new: AnyValue = value
                if hide_message and key == "exception.stacktrace" and isinstance(value, str):
                    # The stack trace's last line repeats the (hidden) exception message.
                    new = value.replace(hide_message, HIDDEN)
                new = self._mask_any(cls, key, new)
            except Exception as exc:
                new = self._failed(key, exc)
            if new is not value:
                changes[key] = new
        if not changes:
            return None
        return {k: changes.get(k, v) for k, v in attrs.items()}

    def _mask_status(self, description: str) -> str | None:
        if self.level == "off":
            return None
        try:
            if self.level == "hide":
                # Keep "ValueError" from "ValueError: <message>".
                head, sep, _ = description.partition(": ")
                return f"{head}: {HIDDEN}" if sep else HIDDEN
            new = self._mask_text(description, 0)
        except Exception as exc:
            return cast(str, self._failed("status.description", exc))
        return None if new is description else new

    # --- internals ---------------------------------------------------------------------------------------

    def _classify(self, key: str, *, event: bool) -> int:
        cache = self._event_key_cache if event else self._key_cache
        cls = cache.get(key)
        if cls is not None:
            return cls
        allow, hide = (self._event_allow, self._event_hide) if event else (self._allow, self._hide)
        if allow.match(key):
            cls = _ALLOW
        elif self.level == "hide" and hide.match(key):
            cls = _HIDE
        elif _is_secret_key(key):
            cls = _SECRET
        else:
            cls = _NORMAL
        if len(cache) < _KEY_CACHE_MAX:
            cache[key] = cls
        return cls

    def _mask_any(self, cls: int, key: str, value: AnyValue) -> AnyValue:
        if isinstance(value, str):
            return self._mask_str(cls, key, value)
        if cls == _ALLOW or value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, (tuple, list)):
            items = [self._mask_any(cls, key, v) for v in value]
            if all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return tuple(items) if isinstance(value, tuple) else items
        if isinstance(value, Mapping):
            inner = {str(k): v for k, v in value.items()}
            masked = self._mask_mapping(inner, event=False)
            return value if masked is None else masked
        if isinstance(value, (bytes, bytearray)):
            try:
                text = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                return value  # binary payload, not text
            new = self._mask_str(cls, key, text)
            return value if new is text else new.encode("utf-8")
        # Not a valid attribute type: export its masked text rather than guess.
        return self._mask_str(cls, key, str(value))

    def _mask_str(self, cls: int, key: str, value: str) -> str:
        if not value:
            return value
        if cls == _HIDE:
            return HIDDEN
        if cls == _SECRET:
            return self._token("secret", value)
        new = self._mask_text(value, 0)
        if self.hook is not None:
            hooked = self.hook(key, new)
            if not isinstance(hooked, str):
                raise TypeError(f"masking hook returned {type(hooked).__name__}, not str")
            return value if hooked == value else hooked
        return new

    def _mask_text(self, text: str, depth: int) -> str:
        if len(text) > 1 and text[0] in "{[" and text[-1] in "}]":
            masked = self._mask_json_text(text, depth)
            if masked is not None:
                return masked
        return self._scan(text)

    def _scan(self, text: str) -> str:
        out = text
        for precheck, pattern, replace in self._passes:
            if precheck is None or precheck(out):
                out = pattern.sub(replace, out)
        if out is not text and out == text:
            return text
        return out

    def _mask_json_text(self, text: str, depth: int) -> str | None:
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        if not isinstance(doc, (dict, list)):
            return None
        new = self._mask_json(doc, depth + 1)
        if new is doc:
            return text
        return json.dumps(new, ensure_ascii=False, separators=(",", ":"))

    def _mask_json(self, node: object, depth: int) -> object:
        """Masked copy of a parsed JSON node; returns ``node`` itself when nothing changed."""
        if depth > _MAX_DEPTH:
            raise RecursionError("JSON nested too deeply to mask")
        if isinstance(node, str):
            return self._mask_text(node, depth) if node else node
        if isinstance(node, dict):
            out: dict[str, object] = {}
            changed = False
            for k, v in node.items():
                nk = self._scan(k)
                if isinstance(v, str) and v and _is_secret_key(k):
                    nv: object = self._token("secret", v)
                else:
                    nv = self._mask_json(v, depth + 1)
                changed = changed or nk is not k or nv is not v
                out[nk] = nv
            return out if changed else node
        if isinstance(node, list):
            items = [self._mask_json(v, depth + 1) for v in node]
            return items if any(a is not b for a, b in zip(items, node, strict=True)) else node
        return node

    def _replacer(self, label: str, find: Callable[[re.Match[str]], Hit | None]) -> Replacer:
        token = self._token

        def replace(m: re.Match[str]) -> str:
            hit = find(m)
            text = m.group()
            if hit is None:
                return text
            start, end, normalized = hit
            base = m.start()
            return text[: start - base] + token(label, normalized) + text[end - base :]

        return replace

    def _make_token(self, label: str, normalized: str) -> str:
        digest = hashlib.sha256((self._salt + normalized).encode("utf-8", "surrogatepass")).hexdigest()
        return f"<{label}:{digest[: self._hash_chars]}>"

    def _failed(self, key: str, exc: BaseException) -> AnyValue:
        self.error_count += 1
        if self.error_count == 1:
            # Only the exception type: its message may quote the very value we refused to export.
            _log.warning(
                "masking failed for attribute %r (%s); exported %r instead of the value "
                "(further failures are logged at debug level)",
                key,
                type(exc).__name__,
                ERROR_PLACEHOLDER,
            )
        else:
            _log.debug("masking failed for attribute %r (%s)", key, type(exc).__name__)
        return ERROR_PLACEHOLDER


def _whole_match(m: re.Match[str]) -> Hit | None:
    return m.start(), m.end(), m.group()
