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

JSON: a string that looks like a JSON object/array stays valid JSON. Usually the detectors run over the
raw document and the tokens go in place (keeping its formatting; no parse needed, since no token or match
contains a quote or backslash). When the raw text cannot settle it safely (escapes next to a hit, a secret
key name, a card as a bare number, user patterns), the document is parsed, every string (object keys
too: a state dump can be keyed by address) is masked, and it is re-serialized compactly with
``ensure_ascii=False``. Documents without findings are returned as the original string.

Not masked: span and event names, resource attributes (service name, host...), numbers other than
card-length integers inside JSON.

Cost: a per-masker cache maps recently seen strings to their masked form (bounded, ~4M characters), since
the same e-mail body recurs in the run, step and LLM spans of one trace. See ``bench/masking.py``.

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

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.util.types import AnyValue

from otel_basic.masking.detectors import BUILTIN_DETECTORS, Detector, Hit, Scanner
from otel_basic.spancopy import copy_span, transform_span

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
_MIN_CHARS = 6  # the shortest thing any detector finds: "a@b.co"
_CACHE_MAX_CHARS = 65536
_CACHE_BUDGET_CHARS = 4_000_000

_Span = tuple[int, int, str]
_KEY_CACHE_MAX = 8192

Replacer = Callable[[re.Match[str]], str]


def _globs(patterns: Iterable[str]) -> re.Pattern[str]:
    parts = [fnmatch.translate(p) for p in patterns]
    return re.compile("|".join(f"(?:{p})" for p in parts) if parts else r"(?!)")


@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def _split_detectors(detectors: Iterable[Detector | str] | None) -> tuple[list[str], list[Detector]]:
    if detectors is None:
        return list(BUILTIN_DETECTORS), []
    names: list[str] = []
    custom: list[Detector] = []
    for d in detectors:
        if isinstance(d, str):
            names.append(d)
        else:
            custom.append(d)
    return names, custom


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
        names, custom = _split_detectors(detectors)
        self._scanner = Scanner(names)
        custom += [
            Detector(label, re.compile(p) if isinstance(p, str) else p) for label, p in (extra_patterns or {}).items()
        ]
        self._custom = tuple((d.precheck, d.pattern, self._replacer(d.label, d.find or _whole_match)) for d in custom)
        self._cache: dict[str, str] = {}
        self._cache_chars = 0
        # Below this length no built-in detector can match; a user pattern might.
        self._min_chars = 1 if self._custom else _MIN_CHARS

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
            cls = self._classify(key, event=False)
            return value if cls == _ALLOW else self._mask_any(cls, key, value)
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

    def mask_span(self, span: ReadableSpan) -> ReadableSpan:
        """A masked copy of ``span`` (``span`` itself if nothing changed); never raises: if the span
        cannot be processed, a skeleton (same ids, name, timing, status code; no attributes or events)
        keeps the trace tree."""
        return _mask_span_with(self, span)

    def mask_text(self, text: str) -> str:
        """Run the detectors (and JSON handling) over free text, whatever the level's key rules."""
        if self.level == "off":
            return text
        try:
            return self._mask_text(text, 0)
        except Exception as exc:
            return cast(str, self._failed("text", exc))

    # --- used by MaskingExporter: ``None`` means "unchanged", so unchanged spans are not copied ------------

    def _mask_mapping(self, attrs: Mapping[str, AnyValue], *, event: bool) -> dict[str, AnyValue] | None:
        # The hot loop of the exporter: plain strings under ordinary keys go straight to the text cache.
        if self.level == "off":
            return None
        changes: dict[str, AnyValue] | None = None
        hide_message: str | None = None
        if event and self.level == "hide":
            msg = attrs.get("exception.message")
            if isinstance(msg, str) and msg:
                hide_message = msg
        key_cache = self._event_key_cache if event else self._key_cache
        text_cache = self._cache
        simple = self.hook is None and hide_message is None
        for key, value in attrs.items():
            if value.__class__ is str:
                cls = key_cache.get(key)
                if cls is None:
                    cls = self._classify(key, event=event)
                if cls == _ALLOW or (simple and cls == _NORMAL and len(value) < self._min_chars):
                    continue
                if simple and cls == _NORMAL:
                    new = text_cache.get(value)
                    if new is None:
                        try:
                            new = self._mask_text(value, 0)
                        except Exception as exc:
                            new = cast(str, self._failed(key, exc))
                    if new is not value:
                        if changes is None:
                            changes = {}
                        changes[key] = new
                    continue
            elif value is None or isinstance(value, (bool, int, float)):
                continue
            else:
                cls = self._classify(key, event=event)
                if cls == _ALLOW:
                    continue
            try:
                masked: AnyValue = value
                if hide_message and key == "exception.stacktrace" and isinstance(value, str):
                    # The stack trace's last line repeats the (hidden) exception message.
                    masked = value.replace(hide_message, HIDDEN)
                masked = self._mask_any(cls, key, masked)
            except Exception as exc:
                masked = self._failed(key, exc)
            if masked is not value:
                if changes is None:
                    changes = {}
                changes[key] = masked
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
        if value is None or isinstance(value, (bool, int, float)):
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
            # Text inside bytes is masked; bytes that are not UTF-8 survive via surrogateescape.
            text = bytes(value).decode("utf-8", "surrogateescape")
            new = self._mask_str(cls, key, text)
            return value if new is text else new.encode("utf-8", "surrogateescape")
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
        if len(text) < self._min_chars:
            return text
        # The same text recurs across a trace (the e-mail body in the run, step and LLM spans, and inside
        # their JSON): mask it once.
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        json_like = text[0] in "{[" and text[-1] in "}]"
        masked = self._mask_json_text(text, depth) if json_like else self._scan(text)
        if len(text) <= _CACHE_MAX_CHARS:
            if self._cache_chars > _CACHE_BUDGET_CHARS:
                self._cache.clear()
                self._cache_chars = 0
            self._cache[text] = masked
            self._cache_chars += len(text) + len(masked)
        return masked

    def _scan(self, text: str) -> str:
        out = text
        for precheck, pattern, replace in self._custom:
            if precheck is None or precheck(out):
                out = pattern.sub(replace, out)
        hits = self._scanner.hits(out)
        if hits:
            out = self._apply(out, hits)
        if out is not text and out == text:
            return text
        return out

    def _apply(self, text: str, hits: list[Hit]) -> str:
        parts: list[str] = []
        pos = 0
        token = self._token
        for start, end, label, normalized in hits:
            parts.append(text[pos:start])
            parts.append(token(label, normalized))
            pos = end
        parts.append(text[pos:])
        return "".join(parts)

    def _mask_json_text(self, text: str, depth: int) -> str:
        """Mask a string that looks like a JSON object/array (or is merely bracketed text).

        Fast path: run the detectors over the raw document and put the tokens in place. Tokens contain no
        quote or backslash and no detector match can contain a quote, so a valid document stays valid and
        keeps its own formatting, and no parse is needed. Cases the raw text cannot settle safely (escape
        sequences inside or right before a hit, an escaped non-ASCII domain, a bare JSON number, a key
        that names a secret, user patterns) take the slow path: parse, mask every string, re-serialize.
        """
        if self._custom or ("@" in text and "\\u" in text and _escaped_domain(text)):
            return self._mask_json_parsed(text, depth)
        scan = text
        if "\\" in text:
            if "\\/" in text:  # "030\/901820": an escape inside a value; only the parsed string shows it
                return self._mask_json_parsed(text, depth)
            # In the raw text, the escape in "\\n+44 20 ..." must read as a line break, not a letter "n".
            for esc in ("\\n", "\\t", "\\r", "\\b", "\\f"):
                scan = scan.replace(esc, "\\ ")
            if "\\u" in scan:
                # "\\u00e9" stands for one character the raw text cannot show: blank it out, and send any hit
                # touching it to the parse path (below).
                scan = _UNICODE_ESCAPE.sub(_blank_escape, scan)
        hits, secret_words = self._scanner.hits_and_secret_words(scan, True)
        if secret_words and _json_names_secret(text):
            return self._mask_json_parsed(text, depth)
        if not hits:
            return text
        for start, end, _label, _normalized in hits:
            if (
                (start > 0 and scan[start - 1] in _ESCAPED)
                or scan[end : end + 1] == "\x00"
                or "\\" in text[start:end]
                or _bare_json_value(text, start, end)
            ):
                return self._mask_json_parsed(text, depth)
        return self._apply(text, hits)

    def _mask_json_parsed(self, text: str, depth: int) -> str:
        try:
            doc = json.loads(text)
        except ValueError:
            return self._scan(text)
        if not isinstance(doc, (dict, list)):
            return self._scan(text)
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
                nk = self._scan(k)  # a state dump can be keyed by address
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
        if isinstance(node, int) and not isinstance(node, bool) and abs(node) >= 10**12:
            # A card number stored as a JSON number becomes a token string.
            digits = str(node)
            hits = self._scanner.hits(digits)
            return self._apply(digits, hits) if hits else node
        return node

    def _replacer(self, label: str, find: Callable[[re.Match[str]], _Span | None]) -> Replacer:
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


_UNICODE_ESCAPE = re.compile(r"\\u[0-9A-Fa-f]{4}")
_ESCAPED = ("\\", "\x00")


def _blank_escape(_m: re.Match[str]) -> str:
    return "\\\x00\x00\x00\x00\x00"  # same length as "\\u00e9"; \x00 is in no detector's alphabet


_JSON_KEY_NEEDLES = (
    "key", "Key", "KEY", "oken", "OKEN", "ecret", "ECRET", "assw", "ASSW", "pwd", "PWD",
    "uthorization", "UTHORIZATION", "ookie", "OOKIE",
)  # fmt: skip


def _json_names_secret(text: str) -> bool:
    """Does the raw JSON have an object key like "password" or "api_key" (whose value we mask whole)?"""
    for needle in _JSON_KEY_NEEDLES:
        p = text.find(needle)
        while p >= 0:
            close = text.find('"', p)
            if close < 0:
                break
            if text[close + 1 : close + 3].lstrip().startswith(":"):
                open_ = text.rfind('"', 0, p)
                if open_ >= 0 and _is_secret_key(text[open_ + 1 : close]):
                    return True
            p = text.find(needle, p + 1)
    return False


def _escaped_domain(text: str) -> bool:
    """Is there an address whose domain holds a ``\\uXXXX`` escape (``info@b\\u00e4ckerei.de``)? The raw
    text cannot show that domain to the detectors; the parsed strings can."""
    at = text.find("@")
    while at >= 0:
        end = at + 1
        while end < len(text) and (text[end].isalnum() or text[end] in ".-"):
            end += 1
        if text.startswith("\\u", end):
            return True
        at = text.find("@", end)
    return False


def _bare_json_value(text: str, start: int, end: int) -> bool:
    """Could text[start:end] be a JSON number rather than part of a string (``[4111111111111111]``)?"""
    i = start - 1
    while i >= 0 and text[i] in " \t\r\n":
        i -= 1
    if i < 0 or text[i] not in ":,[":
        return False
    j, n = end, len(text)
    while j < n and text[j] in " \t\r\n":
        j += 1
    return j == n or text[j] in ",]}"


def _whole_match(m: re.Match[str]) -> _Span | None:
    return m.start(), m.end(), m.group()


def _mask_span_with(masker: Masker, span: ReadableSpan) -> ReadableSpan:
    try:
        return transform_span(
            span,
            lambda attrs: masker._mask_mapping(attrs, event=False),
            lambda _name, attrs: masker._mask_mapping(attrs, event=True),
            lambda attrs: masker._mask_mapping(attrs, event=False),
            masker._mask_status,
        )
    except Exception as exc:
        masker._failed(f"span {span.name!r}", exc)
        return copy_span(span, attributes={"otel_basic.masking.error": ERROR_PLACEHOLDER}, events=(), links=())
