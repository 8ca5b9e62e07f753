"""The Masker: rewrites every string of a span so personal data and secrets never leave the process.

Coverage
    :meth:`Masker.mask_span` returns a masked copy of a finished span: its name, attribute keys and
    values, event names and attributes, link attributes, status description, and its instrumentation
    scope's attributes and schema URL. Exception messages and stack traces are event attributes
    (``exception.message``/``exception.stacktrace``) or attributes, so they are covered too. Resource
    attributes are the pipeline's: it masks those it adds with :meth:`Masker.mask_attributes`.
    Instrumentation scope names and versions are library names and are not masked.

Attribute keys run through the detectors too (``metadata.approved_by:<email:..>``); two keys that mask to
the same name are both kept, the later with a ``#2`` suffix. A key's masked form is cached, so a key with
nothing detected costs one dict lookup. An integer of 13+ digits runs through the detectors as text (a
card number becomes a ``<card:..>`` string).

Levels
    ``"detectors"`` (default): every string (and string inside a sequence, mapping or JSON document) runs
    through the detectors; each hit becomes a typed token ``<email:1f3a9c04d2b8e6a7>``.
    ``"hide"``: exactly ``detectors`` everywhere, plus content replaced: content attributes (prompts,
    messages, ``input.value``/``output.value``, log bodies, exception messages) become ``"<hidden>"``;
    status descriptions keep only a leading exception type (``ValueError: <hidden>``); stack traces keep
    their frames (``File "x.py", line 3, in f`` and the source line) and every exception line (chained
    causes included) becomes ``Type: <hidden>``. So ``hide`` is at least as private as ``detectors`` on
    every field, by construction.
    ``"off"``: values pass unchanged.

Tokens are ``<label:hash>``: the first ``hash_chars`` (default 16, i.e. 64 bits: collision-free in
practice at a million users) hex digits of ``HMAC-SHA256(salt, normalized value)``. The same e-mail
address (case-insensitively), card or phone number always maps to the same token, so grouping by user and
"same sender in two places" still work in Langfuse while the value itself is gone.

Salt: pass ``salt`` (``OTEL_BASIC_MASK_SALT``). Without it the pipeline derives one with
:func:`derive_salt` from the deployment's identity (the Langfuse public key, or the OTLP endpoint, plus
the service name), so tokens are stable across processes, restarts and replicas of one deployment with
no setting at all. A derived salt is not secret-grade: anyone who knows the public key and service name
can hash guesses (phone numbers are few) and match tokens; set ``OTEL_BASIC_MASK_SALT`` to a random
secret when that matters. ``Masker()`` with no salt uses ``derive_salt()`` of nothing: stable everywhere.

Keys: ``allow_keys`` (fnmatch globs) are never touched. A key is on the default list only because its
values are never personal: ids we or the SDK generate, counters, model names, span kinds. Identifiers
that may carry personal data (``user.id``, ``session.id``, ``langfuse.trace.name``, ``langfuse.user.id``,
``langfuse.session.id``) are deliberately NOT on it: a value that is detected personal data (an e-mail
address) becomes a stable token, one that is not (``u-9``, a UUID) passes unchanged. An app that wants
raw ids adds the key to ``OTEL_BASIC_MASK_ALLOW_KEYS``. Values under keys that name a secret
(``password``, ``api_key``, ``authorization``, ``*.token``...) are replaced whole by ``<secret:..>``, also
inside JSON documents.

JSON: a string that looks like a JSON object/array stays valid JSON. Usually the detectors run over the
raw document and the tokens go in place (keeping its formatting; no parse needed, since no token or match
contains a quote or backslash); a long document in remembered pieces cut at ``", "``, so one that
differs from a previous one by a number is mostly not scanned again. When the raw text cannot settle it
safely (escapes next to a hit, an escaped ASCII character such as ``\\u0040``, a secret key name, a card
as a bare number, user patterns), the document is parsed, every string (object keys too: a state dump
can be keyed by address) is masked, and it is re-serialized compactly with ``ensure_ascii=False``. A
string inside that is itself a JSON document (tool-call arguments inside a message list) is masked the
same way, secret-named keys included (the raw text shows them as ``\\"password\\":``); the depth is
bounded (``_MAX_DEPTH``) and so is the size (``max_chars``).

Cost: bounded by ``max_chars`` (default 16384, ``OTEL_BASIC_MAX_ATTRIBUTE_CHARS``), not by the input. A
longer string is cut *before* detection: the detectors see its first ``max_chars`` characters plus a
512-character look-ahead, a value that straddles the cut is replaced whole (never half an address), and
``…[truncated by otel-basic: original N chars]`` is appended. A string that arrives already cut (ends
with that marker) has its last value-like characters before the marker dropped, since a cut there may
have left a partial value the detectors cannot recognise. A per-masker memo maps recently masked strings
to their masked form (:class:`_Memo`: two generations of at most 2048 strings and 2M characters each; none
over 64 Ki characters; ``memo_entries=0`` turns it off). See ``bench/masking.py``.

Failure: nothing here raises. A value whose masking fails becomes ``"<masking-error>"`` (fail closed);
a span that cannot be processed becomes a skeleton (same ids, timing and status code; no attributes,
events or links; ``otel_basic.masking.error``). The first failure is logged as a warning (exception type
only), later ones at debug level; :attr:`Masker.error_count` counts them.
"""

from __future__ import annotations

import bisect
import fnmatch
import functools
import hashlib
import itertools
import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, cast

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, Status
from opentelemetry.util.types import AnyValue

from otel_basic.limits import DEFAULT_MAX_ATTRIBUTE_CHARS, truncation_marker
from otel_basic.masking.detectors import (
    BUILTIN_DETECTORS,
    OWN_TOKEN,
    Detector,
    Hit,
    Scanner,
    has_quoted_printable,
)
from otel_basic.masking.secret_names import NAME_NEEDLES, is_secret_name
from otel_basic.spancopy import attributes_of, copy_event, copy_span, plain

__all__ = [
    "DEFAULT_ALLOW_KEYS",
    "DEFAULT_EVENT_ALLOW_KEYS",
    "DEFAULT_EVENT_HIDE_KEYS",
    "DEFAULT_HIDE_KEYS",
    "ERROR_ATTRIBUTE",
    "ERROR_PLACEHOLDER",
    "HIDDEN",
    "IDENTITY_KEYS",
    "Level",
    "Masker",
    "derive_salt",
    "hide_status",
    "hide_traceback",
]

_log = logging.getLogger("otel_basic.masking")

Level = Literal["detectors", "hide", "off"]
_LEVELS: tuple[str, ...] = ("detectors", "hide", "off")

HIDDEN = "<hidden>"
ERROR_PLACEHOLDER = "<masking-error>"
ERROR_ATTRIBUTE = "otel_basic.masking.error"
"""Set (to ``ERROR_PLACEHOLDER``) on the skeleton exported for a span that could not be masked."""

_SALT_CONTEXT = "otel-basic mask salt v1"


def derive_salt(*identity: str | None) -> str:
    """A salt derived from a deployment's identity (e.g. Langfuse public key or endpoint, service name).

    Every process of one deployment derives the same salt, so tokens match across processes, restarts and
    replicas without any setting. It is a hash of public facts, not a secret: set ``OTEL_BASIC_MASK_SALT``
    to a random secret when tokens must not be matched against hashed guesses. Never log the result.
    """
    material = "\x00".join([_SALT_CONTEXT, *(part or "" for part in identity)])
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


IDENTITY_KEYS: tuple[str, ...] = (
    "user.id",
    "session.id",
    "langfuse.user.id",
    "langfuse.session.id",
    "langfuse.trace.name",
)
"""Identifiers Langfuse groups or lists by. Not allow-listed: a detected address in them becomes a stable
token; add a key to ``allow_keys`` (``OTEL_BASIC_MASK_ALLOW_KEYS``) to export its raw values."""

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
    # Langfuse structure (never identity keys: see IDENTITY_KEYS)
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
    # generic OTel: names chosen one by one (code.stacktrace, otel.status_description are text)
    "service.name",
    "service.version",
    "service.namespace",
    "service.instance.id",
    "telemetry.sdk.*",
    "otel.status_code",
    "otel.scope.*",
    "otel.library.*",
    "code.filepath",
    "code.file.path",
    "code.lineno",
    "code.line.number",
    "code.function",
    "code.function.name",
    "code.namespace",
    "code.column",
    "code.column.number",
    "thread.id",
    "thread.name",
    ERROR_ATTRIBUTE,
)
"""Attribute keys (fnmatch globs) that are never masked: values that are never personal."""

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
    "exception.message",
    "log.message",
    "log.body",
    "message",
    "body",
    # the same under a prefix (e.g. log records copied into Langfuse metadata)
    "*.message",
    "*.body",
)
"""Content attribute keys replaced by ``"<hidden>"`` at level ``"hide"``."""

_STATUS_KEYS: tuple[str, ...] = (
    "langfuse.observation.status_message",
    "otel.status_description",
    "*.status_message",
    "*.status_description",
    "*.exception",  # "ValueError: message" (e.g. log records in Langfuse metadata: ``...log.exception``)
)
"""Status-message attributes: in ``hide`` they keep only a leading exception type, like the status."""

_TRACE_KEYS: tuple[str, ...] = ("exception.stacktrace", "code.stacktrace", "*.stacktrace", "*.traceback", "*.stack")
"""Stack-trace attributes: in ``hide`` every exception line (chained causes too) loses its message."""

DEFAULT_EVENT_ALLOW_KEYS: tuple[str, ...] = (
    "exception.type",
    "exception.escaped",
    "log.level",
    "log.severity",
    "level",
    "severity",
    "severity_text",
    "severity_number",
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

_NORMAL, _ALLOW, _HIDE, _SECRET, _STATUS, _TRACE = 0, 1, 2, 3, 4, 5
_MAX_DEPTH = 32
_MIN_CHARS = 5  # the shortest things any detector finds: "<a@b>", "://a@" (none of 4 or fewer, searched)
_MEMO_ENTRIES = 2048
"""Strings per memo generation (:class:`_Memo`; two generations, so at most twice as many)."""
_MEMO_GENERATION_CHARS = 2_000_000
"""Characters (inputs plus masked forms) per memo generation: at most ~4M held, 4-16 MB."""
_MEMO_MAX_CHARS = 65536
"""Longer strings are not memoized: rarely repeated, and each would take a large share of the budget."""
_JSON_CHUNK_CHARS = 256
"""A JSON document longer than twice this is masked in pieces of about this size, each remembered (see
:meth:`Masker._mask_json_raw`): a step's input and output differ from run to run by a few numbers, so
only the pieces holding those are scanned again."""
# Where a document is cut into pieces: the end of a member's value (a string's closing quote, or a key's
# closing quote, its colon and a number, true, false or null), any closing brackets, a comma and the next
# key's opening quote. No detector match holds a quote, and none reads context across a comma followed by
# a quote (the assignment detector reads `key": "value` across a colon, never a comma): so the pieces'
# hits are the document's. A number or literal (_NUMBER_CUT) is what changes from run to run (a tool's
# duration_ms), so it may end a short piece, and the long string after it is remembered on its own.
_CHUNK_CUT = re.compile(r'"[ \t\r\n}\]]*,[ \t\r\n]*"')
_NUMBER_CUT = re.compile(r'":[ \t\r\n]*(?:-?[0-9][0-9.eE+-]*|true|false|null)[ \t\r\n}\]]*,[ \t\r\n]*"')
_NUMBER_PIECE_CHARS = 32
"""The shortest piece a number or literal ends (a string ends one of at least :data:`_JSON_CHUNK_CHARS`):
a document of many short numeric members is cut into pieces of a few members each, not one per member."""
_CHUNK_DEPTH = -1
"""The memo key of a piece is ``(piece, _CHUNK_DEPTH)``: apart from whole texts and ``(text, depth)``."""
_LOOKAHEAD = 512
"""Characters past the cut the detectors still read, so a value straddling it is recognised whole."""
_NO_BOUND = sys.maxsize

_Span = tuple[int, int, str]
_KEY_CACHE_MAX = 8192
_BIG = 10**12
_HAS_DIGIT_RUN = re.compile(r"[0-9]{4}")
"""Integers at least this large (13+ digits) may be card numbers: they run through the detectors."""

Replacer = Callable[[re.Match[str]], str]

# "ValueError", "otel_basic.FooError", "KeyboardInterrupt": a leading exception type may stay in `hide`.
_EXCEPTION_TYPE = re.compile(
    r"[A-Za-z_][\w.]*(?:Error|Exception|Warning|Exit|Interrupt|Group|Iteration|Timeout|Cancelled|Failure|Fault)"
)
_MARKER_MAX_CHARS = len(truncation_marker(10**15))
_MARKER_TAIL = re.compile(r"…\[truncated by otel-basic: original [0-9]+ chars\]\Z")
# What a cut may have left half of: the last few value-like groups before the cut.
# What a cut may have left half of: the last run of non-space characters, and before it up to 8
# value-like tokens (a word with a digit, @, %, & or backslash; or up to 8 of [0-9A-Z+()./-]), each
# followed by at most one space, all within the last 160 characters. A regex for this backtracked
# exponentially on long digit runs (14 digits: 1.4 s, 18 digits: 44 s on an export thread), so it is
# a right-to-left scan, linear in those 160 characters.
_TAIL_SPECIAL = frozenset("0123456789@%&\\")
_TAIL_PLAIN = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ+()./-")
_TAIL_TOKENS = 8
_TAIL_WINDOW = 160


def _in_word(ch: str) -> bool:
    return ch not in "<>" and not ch.isspace()


def partial_tail_start(body: str) -> int:
    """Index where the characters a cut may have left half of begin (``len(body)``: none)."""
    floor = max(0, len(body) - _TAIL_WINDOW)
    i = len(body)
    while i > floor and _in_word(body[i - 1]):  # the last run is always suspect
        i -= 1
    start, budget = i, _TAIL_TOKENS
    while budget > 0 and i > floor:
        end = i - 1 if body[i - 1] == " " else i  # one optional space after each token
        k = end
        while k > floor and _in_word(body[k - 1]):
            k -= 1
        if k == end:
            break
        if any(ch in _TAIL_SPECIAL for ch in body[k:end]):
            budget -= 1
            i = start = k
            continue
        m = end  # otherwise only a suffix of plain characters, at most 8 per token
        while m > k and body[m - 1] in _TAIL_PLAIN and end - (m - 1) <= 8 * budget:
            m -= 1
        if m == end:
            break
        budget -= -(-(end - m) // 8)
        start = m
        if m > k:  # the word's head is not value-like: the tail starts inside the word
            break
        i = m
    return start
_TOKEN_START = re.compile(r"<[a-z_]+:[0-9a-f]*\Z")


def _globs(patterns: Iterable[str]) -> re.Pattern[str]:
    parts = [fnmatch.translate(p) for p in patterns]
    return re.compile("|".join(f"(?:{p})" for p in parts) if parts else r"(?!)")


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


def _hmac_pads(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """SHA-256 states after the HMAC inner and outer key pads (RFC 2104), to copy for each token."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return hashlib.sha256(bytes(b ^ 0x36 for b in key)), hashlib.sha256(bytes(b ^ 0x5C for b in key))


def hide_status(description: str) -> str:
    """``hide`` for a status message: ``ValueError: <hidden>``, or just ``<hidden>``."""
    head, sep, _ = description.partition(": ")
    return f"{head}: {HIDDEN}" if sep and _EXCEPTION_TYPE.fullmatch(head) else HIDDEN


_TB_DECORATION = re.compile(r"[ \t|+-]*")
_TB_KEEP = (
    "Traceback (most recent call last)",
    "Exception Group Traceback (most recent call last)",
    "During handling of the above exception",
    "The above exception was the direct cause",
    "[Previous line repeated",
    "...",
)


def _marker_line(body: str) -> bool:
    """Only position markers (``^^^~~~``) or an exception-group separator (``---- 1 ----``)."""
    if not body.strip(" ^~"):
        return True
    return body.count("-") >= 4 and not body.strip(" -+|0123456789.")


def hide_traceback(text: str) -> str:
    """``hide`` for a stack trace: frames stay, every exception line (chained causes, notes, exception
    group members) becomes ``Type: <hidden>`` or ``<hidden>``.

    A line is kept only if it is a traceback header, a ``File "...", line N, in f`` frame, the source
    line right after a frame (more indented; it shows code, not runtime values), or only markers
    (``^^^~~~``, group separators). Anything else may hold a message.
    """
    out: list[str] = []
    frame_indent = -1
    for line in text.split("\n"):
        indent = _TB_DECORATION.match(line)
        cut = indent.end() if indent else 0
        body = line[cut:]
        if body.startswith('File "'):
            out.append(line)
            frame_indent = cut
            continue
        if frame_indent >= 0 and cut > frame_indent and body:
            out.append(line)  # the source line of the frame above
            frame_indent = -1
            continue
        frame_indent = -1
        if _marker_line(body) or body.startswith(_TB_KEEP):
            out.append(line)
            continue
        head, sep, _ = body.partition(":")
        kept = head if sep and _EXCEPTION_TYPE.fullmatch(head) else ""
        out.append(f"{line[:cut]}{kept}: {HIDDEN}" if kept else f"{line[:cut]}{HIDDEN}")
    return "\n".join(out)


_MemoKey = str | tuple[str, int]


class _Memo:
    """Recently masked strings and their masked forms, for one :class:`Masker`.

    Why: the same strings recur across the spans of a run (the sender in every span's ``user.id``, an
    LLM output that is also the span's ``output.value``) and across runs (prompt templates). Once a
    Masker is built its detectors, patterns, salt and hash length are fixed, so masking a string is a
    pure function of it: a remembered result is byte for byte what masking it again gives. Never shared
    between maskers.

    Two generations approximate LRU without a lock on reads: a lookup reads ``young``, then ``old`` (plain
    dict reads, atomic); a hit in ``old`` is copied into ``young``; when ``young`` is full it becomes
    ``old`` and the previous ``old`` is dropped. So a string used within the last generation stays, and at
    most two generations are held. Writes take the lock (export workers mask concurrently); a dict that
    readers may hold is only ever added to, never emptied. A strict LRU would take a lock on every
    lookup, several per span, most of them hits. ``max_entries=0`` turns it off (tests compare with it).
    """

    __slots__ = ("_chars", "_lock", "_max_chars", "_max_entries", "old", "young")

    def __init__(self, max_entries: int, max_chars: int) -> None:
        self._max_entries = max_entries
        self._max_chars = max_chars
        self.young: dict[_MemoKey, str] = {}
        self.old: dict[_MemoKey, str] = {}
        self._chars = 0
        self._lock = threading.Lock()

    def recall(self, key: _MemoKey, text_chars: int) -> str | None:
        """A result from the older generation (the caller found none in ``young``), copied into ``young``:
        used again, so it stays through the next rotation."""
        found = self.old.get(key)
        if found is not None:
            self.put(key, found, text_chars + len(found))
        return found

    def put(self, key: _MemoKey, masked: str, chars: int) -> None:
        """Remember ``masked`` for ``key``; ``chars``: the input's and the result's length together."""
        if not self._max_entries:
            return
        with self._lock:
            young = self.young
            if key in young:
                return
            if len(young) >= self._max_entries or self._chars + chars > self._max_chars:
                self.old = young
                self.young = young = {}
                self._chars = 0
            young[key] = masked
            self._chars += chars

    def __len__(self) -> int:
        return len(self.young.keys() | self.old.keys())


class Masker:
    """Masks spans and attribute values; see the module docstring for levels, tokens, salt and keys."""

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
        hash_chars: int = 16,
        max_chars: int | None = DEFAULT_MAX_ATTRIBUTE_CHARS,
        memo_entries: int = _MEMO_ENTRIES,
    ) -> None:
        if level not in _LEVELS:
            raise ValueError(f"masking level must be one of {', '.join(_LEVELS)}; got {level!r}")
        if not 4 <= hash_chars <= 64:
            raise ValueError("hash_chars must be between 4 and 64")
        if max_chars is not None and max_chars < 1:
            raise ValueError("max_chars must be positive (or None for no bound)")
        if memo_entries < 0:
            raise ValueError("memo_entries must be >= 0 (0 turns the memo off)")
        self.level: Level = cast(Level, level)
        self.hook = hook
        self.error_count = 0
        self.max_chars = _NO_BOUND if max_chars is None else max_chars
        self._hmac_pads = _hmac_pads((derive_salt() if salt is None else salt).encode("utf-8", "surrogatepass"))
        self._hash_chars = hash_chars
        self._token: Callable[[str, str], str] = functools.lru_cache(maxsize=16384)(self._make_token)

        # Custom patterns run first, so built-in detectors never see (or re-mask) their tokens.
        names, custom = _split_detectors(detectors)
        self._scanner = Scanner(names)
        custom += [
            Detector(label, re.compile(p) if isinstance(p, str) else p) for label, p in (extra_patterns or {}).items()
        ]
        self._custom = tuple((d.precheck, d.pattern, self._replacer(d.label, d.find or _whole_match)) for d in custom)
        self._memo = _Memo(memo_entries, _MEMO_GENERATION_CHARS)
        # Below this length no built-in detector can match; a user pattern might.
        self._min_chars = 1 if self._custom else _MIN_CHARS

        allow = list(allow_keys)
        self._allow = _globs(allow)
        self._hide = _globs(hide_keys)
        self._event_allow = _globs([*allow, *event_allow_keys])
        self._event_hide = _globs([*hide_keys, *event_hide_keys])
        self._status_keys = _globs(_STATUS_KEYS)
        self._trace_keys = _globs(_TRACE_KEYS)
        self._key_cache: dict[str, int] = {}
        self._event_key_cache: dict[str, int] = {}
        self._key_masks: dict[str, str] = {}
        self._scope_cache: dict[int, tuple[InstrumentationScope, InstrumentationScope | None]] = {}

    # --- public API ------------------------------------------------------------------------------------

    def mask_span(self, span: ReadableSpan, max_chars: int | None = None) -> ReadableSpan:
        """A masked copy of ``span`` (or ``span`` itself when nothing changed); never raises.

        Covers the name, attributes, event names and attributes, link attributes and the status
        description. Strings longer than ``max_chars`` (default: the masker's ``max_chars``) are cut
        before detection and end with the truncation marker, so the cost is bounded by the limit, not
        by the input. On an internal failure: a skeleton copy (same ids, timing, status code; no
        attributes, events or links) marked with ``otel_basic.masking.error``.
        """
        if self.level == "off":
            return span
        bound = self.max_chars if max_chars is None else max_chars
        try:
            return self._mask_span(span, max(1, bound))
        except Exception as exc:
            self._failed("span", exc)
            return self._skeleton(span)

    def mask_value(self, key: str, value: AnyValue) -> AnyValue:
        """The value to export for span attribute ``key``; never raises (fails closed)."""
        if self.level == "off":
            return value
        try:
            cls = self._classify(key, event=False)
            return value if cls == _ALLOW else self._mask_any(cls, key, value, self.max_chars)
        except Exception as exc:
            return self._failed(key, exc)

    def mask_attributes(self, attrs: Mapping[str, AnyValue] | None) -> dict[str, AnyValue]:
        """A masked copy of span (or resource) attributes; never raises."""
        if not attrs:
            return {}
        try:
            masked = self._mask_mapping(attrs, event=False)
        except Exception as exc:
            self._failed("attributes", exc)
            return {ERROR_ATTRIBUTE: ERROR_PLACEHOLDER}
        return dict(attrs) if masked is None else masked

    def mask_event_attributes(self, name: str, attrs: Mapping[str, AnyValue] | None) -> dict[str, AnyValue]:
        """A masked copy of event attributes (log records, exceptions), with event hide/allow rules."""
        if not attrs:
            return {}
        try:
            masked = self._mask_mapping(attrs, event=True)
        except Exception as exc:
            self._failed("event attributes", exc)
            return {ERROR_ATTRIBUTE: ERROR_PLACEHOLDER}
        return dict(attrs) if masked is None else masked

    def mask_text(self, text: str) -> str:
        """Run the detectors (and JSON handling) over free text, whatever the level's key rules."""
        if self.level == "off":
            return text
        try:
            return self._mask_text(text, 0, self.max_chars)
        except Exception as exc:
            return cast(str, self._failed("text", exc))

    # --- the span --------------------------------------------------------------------------------------

    def _mask_span(self, span: ReadableSpan, bound: int) -> ReadableSpan:
        name = self._mask_name("span.name", span.name, bound)
        attributes = attributes_of(span)
        new_attrs = self._mask_mapping(attributes, event=False, bound=bound) if attributes else None

        raw_events = getattr(span, "_events", None)
        events: Sequence[Event] = span.events if raw_events is None or raw_events else ()
        new_events: list[Event] | None = None
        for i, event in enumerate(events):
            ev_name = self._mask_name("event.name", event.name, bound)
            ev_attrs = (
                self._mask_mapping(plain(event.attributes), event=True, bound=bound) if event.attributes else None
            )
            if ev_attrs is not None or ev_name is not event.name:
                if new_events is None:
                    new_events = list(events)
                new_events[i] = copy_event(
                    event,
                    event.attributes if ev_attrs is None else ev_attrs,
                    None if ev_name is event.name else ev_name,
                )

        raw_links = getattr(span, "_links", None)
        links: Sequence[Link] = span.links if raw_links is None or raw_links else ()
        new_links: list[Link] | None = None
        for i, link in enumerate(links):
            link_attrs = (
                self._mask_mapping(plain(link.attributes), event=False, bound=bound) if link.attributes else None
            )
            if link_attrs is not None:
                if new_links is None:
                    new_links = list(links)
                new_links[i] = Link(link.context, link_attrs)

        status = span.status
        new_status: Status | None = None
        if status.description:
            desc = self._mask_status(status.description, bound)
            if desc is not None:
                new_status = Status(status.status_code, desc)

        scope = span.instrumentation_scope
        new_scope = None if scope is None else self._mask_scope(scope, bound)

        if (
            name is span.name
            and new_attrs is None
            and new_events is None
            and new_links is None
            and new_status is None
            and new_scope is None
        ):
            return span
        copied = copy_span(
            span,
            attributes=attributes if new_attrs is None else new_attrs,
            events=new_events,
            links=new_links,
            status=new_status,
            name=None if name is span.name else name,
        )
        if new_scope is not None:
            copied._instrumentation_scope = new_scope  # copy_span keeps the original's scope
        return copied

    def _mask_scope(self, scope: InstrumentationScope, bound: int) -> InstrumentationScope | None:
        """The instrumentation scope with masked attributes and schema URL, or ``None`` when unchanged.
        Its name and version are library names and versions, not masked. Cached per scope object (a
        process has a handful)."""
        cache = self._scope_cache
        entry = cache.get(id(scope))
        if entry is not None and entry[0] is scope:
            return entry[1]
        attrs = scope.attributes
        new_attrs = self._mask_mapping(attrs, event=False, bound=bound) if attrs else None
        url = scope.schema_url
        new_url = self._mask_name("scope.schema_url", url, bound) if url else url
        masked = None
        if new_attrs is not None or new_url != url:
            masked = InstrumentationScope(
                scope.name, scope.version, new_url, new_attrs if new_attrs is not None else attrs
            )
        if len(cache) >= 256:
            cache.clear()
        cache[id(scope)] = (scope, masked)  # holds the scope: its id is not reused while cached
        return masked

    def _mask_name(self, key: str, name: object, bound: int) -> str:
        """A span or event name: detectors (names are not content, so ``hide`` does not replace them)."""
        text = name if isinstance(name, str) else str(name)
        try:
            new = self._mask_text(text, 0, bound)
            if self.hook is not None:
                new = self._run_hook(key, text, new)
        except Exception as exc:
            return cast(str, self._failed(key, exc))
        return name if new == name and isinstance(name, str) else new

    def _mask_status(self, description: str, bound: int | None = None) -> str | None:
        """The masked status description, or ``None`` when unchanged ."""
        if self.level == "off":
            return None
        try:
            text = hide_status(description) if self.level == "hide" else description
            new = self._mask_text(text, 0, self.max_chars if bound is None else bound)
            if self.hook is not None:
                new = self._run_hook("status.description", description, new)
        except Exception as exc:
            return cast(str, self._failed("status.description", exc))
        return None if new == description else new

    def _skeleton(self, span: ReadableSpan) -> ReadableSpan:
        try:
            name = self.mask_text(span.name) if isinstance(span.name, str) else ERROR_PLACEHOLDER
            return copy_span(
                span,
                attributes={ERROR_ATTRIBUTE: ERROR_PLACEHOLDER},
                events=(),
                links=(),
                status=Status(span.status.status_code),
                name=name,
            )
        except Exception:  # a span that cannot even be copied: the bare minimum, still no raw value
            _log.debug("masking: the skeleton of span %r could not be copied either", span.name, exc_info=True)
            return ReadableSpan(
                name=ERROR_PLACEHOLDER,
                context=span.get_span_context(),
                parent=span.parent,
                attributes={ERROR_ATTRIBUTE: ERROR_PLACEHOLDER},
                start_time=span.start_time,
                end_time=span.end_time,
            )

    # --- attribute mappings: ``None`` means "unchanged", so unchanged spans are not copied -------------

    def _mask_mapping(
        self, attrs: Mapping[str, AnyValue], *, event: bool, bound: int | None = None
    ) -> dict[str, AnyValue] | None:
        # The hot loop: plain strings under ordinary keys go straight to the memo.
        if self.level == "off":
            return None
        if bound is None:
            bound = self.max_chars
        changes: dict[str, AnyValue] | None = None
        hide_message: str | None = None
        if self.level == "hide":
            msg = attrs.get("exception.message")
            if isinstance(msg, str) and msg:
                hide_message = msg
        key_cache = self._event_key_cache if event else self._key_cache
        memoized = self._memo.young  # a generation rotated out meanwhile still holds valid results
        simple = self.hook is None
        min_chars = self._min_chars
        for key, value in attrs.items():
            if value.__class__ is str:
                cls = key_cache.get(key)
                if cls is None:
                    cls = self._classify(key, event=event)
                if cls == _ALLOW or (simple and cls == _NORMAL and len(value) < min_chars):
                    continue
                if simple and cls == _NORMAL and len(value) <= bound:
                    new = memoized.get(value)
                    if new is None:
                        try:
                            new = self._mask_text(value, 0, bound)
                        except Exception as exc:
                            new = cast(str, self._failed(key, exc))
                    if new is not value and new != value:  # the memo answers with the first equal text
                        if changes is None:
                            changes = {}
                        changes[key] = new
                    continue
            elif value is None or value.__class__ is bool:
                continue
            elif isinstance(value, float) or (value.__class__ is int and -_BIG < value < _BIG):
                cls = key_cache.get(key)  # a number is masked only under a secret name (a numeric PIN)
                if cls is None:
                    cls = self._classify(key, event=event)
                if cls != _SECRET:
                    continue
            else:
                cls = self._classify(key, event=event)
                if cls == _ALLOW:
                    continue
            try:
                masked: AnyValue = value
                if hide_message and cls == _TRACE and isinstance(value, str):
                    # The stack trace repeats the (hidden) exception message, possibly across lines.
                    masked = value.replace(hide_message, HIDDEN)
                masked = self._mask_any(cls, key, masked, bound)
            except Exception as exc:
                masked = self._failed(key, exc)
            if masked is not value:
                if changes is None:
                    changes = {}
                changes[key] = masked
        renames = self._key_renames(attrs, bound)
        if renames is not None:
            return _renamed(attrs, changes or {}, renames)
        if not changes:
            return None
        return {k: changes.get(k, v) for k, v in attrs.items()}

    def _key_renames(self, attrs: Mapping[str, AnyValue], bound: int) -> dict[str, str] | None:
        """Masked attribute keys (``metadata.approved_by:<email:..>``): ``None`` when no key changes. A
        key's masked form is cached, so a key seen before costs one dict lookup."""
        masks = self._key_masks
        renames: dict[str, str] | None = None
        for key in attrs:
            new = masks.get(key)
            if new is None:
                new = self._mask_key(key, bound)
            if new is not key and new != key:  # the memory returns the first equal key object seen
                if renames is None:
                    renames = {}
                renames[key] = new
        return renames

    def _mask_key(self, key: str, bound: int) -> str:
        try:
            if not isinstance(key, str):
                return str(key)  # not a valid attribute key; export its masked text # pragma: no cover
            if len(key) < self._min_chars:
                new = key
            elif len(key) > bound:
                return self._mask_long(key, 0, bound)  # not cached: depends on the bound
            else:
                new = self._scan(key)
                if "." in new and _HAS_DIGIT_RUN.search(new):
                    # "metadata.5555 - 5555 - 5555 - 4444": a value right after a dot is not a decimal part
                    new = ".".join(self._scan(part) for part in new.split("."))
                if new == key:
                    new = key
        except Exception as exc:
            return cast(str, self._failed("attribute key", exc))
        masks = self._key_masks
        if len(masks) >= _KEY_CACHE_MAX:
            masks.clear()
        masks[key] = new
        return new

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
        elif is_secret_name(key):
            cls = _SECRET
        elif self.level == "hide" and self._status_keys.match(key):
            cls = _STATUS
        elif self.level == "hide" and self._trace_keys.match(key):
            cls = _TRACE
        else:
            cls = _NORMAL
        if len(cache) < _KEY_CACHE_MAX:
            cache[key] = cls
        return cls

    def _mask_any(self, cls: int, key: str, value: AnyValue, bound: int) -> AnyValue:
        if isinstance(value, str):
            return self._mask_str(cls, key, value, bound)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _BIG:
            # A card number stored as an integer: its digits are detected like text, a hit becomes a
            # token string (the attribute's type changes from int to string).
            digits = str(value)
            if cls == _SECRET:
                return self._token("secret", digits)
            hits = self._scanner.hits(digits)
            return self._apply(digits, hits) if hits else value
        if cls == _SECRET and _is_number(value):
            return self._token("secret", str(value))  # a numeric PIN or passcode under a secret name
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, (tuple, list)):
            items = [self._mask_any(cls, key, v, bound) for v in value]
            if all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return tuple(items) if isinstance(value, tuple) else items
        if isinstance(value, Mapping):
            inner = {str(k): v for k, v in value.items()}
            masked = self._mask_mapping(inner, event=False, bound=bound)
            return value if masked is None else masked
        if isinstance(value, (bytes, bytearray)):
            # Text inside bytes is masked; bytes that are not UTF-8 survive via surrogateescape.
            text = bytes(value[: bound * 4 + _LOOKAHEAD * 4]).decode("utf-8", "surrogateescape")
            new = self._mask_str(cls, key, text, bound)
            if new is text and len(value) <= bound:
                return value
            return new.encode("utf-8", "surrogateescape")
        # Not a valid attribute type: export its masked text rather than guess.
        return self._mask_str(cls, key, str(value), bound)

    def _mask_str(self, cls: int, key: str, value: str, bound: int) -> str:
        if not value:
            return value
        if cls == _HIDE:
            return HIDDEN
        if cls == _SECRET:
            return self._token("secret", value[: bound + _LOOKAHEAD])
        if cls == _STATUS:
            new = self._mask_text(hide_status(value), 0, bound)
        elif cls == _TRACE and len(value) > bound:
            # Cut first (a cut line is an exception line or a frame: hidden or harmless either way).
            new = self._mask_text(hide_traceback(value[:bound]), 0) + truncation_marker(len(value))
        elif cls == _TRACE:
            new = self._mask_text(hide_traceback(value), 0, bound)
        else:
            new = self._mask_text(value, 0, bound)
        if new is not value and new == value:
            new = value
        if self.hook is not None:
            return self._run_hook(key, value, new)
        return new

    def _run_hook(self, key: str, original: str, masked: str) -> str:
        assert self.hook is not None
        hooked = self.hook(key, masked)
        if not isinstance(hooked, str):
            raise TypeError(f"masking hook returned {type(hooked).__name__}, not str")
        return original if hooked == original else hooked

    def _mask_text(self, text: str, depth: int, bound: int = _NO_BOUND) -> str:
        n = len(text)
        if n < self._min_chars:
            return text
        if n > bound:
            if n <= bound + _MARKER_MAX_CHARS and text[-1] == "]" and _MARKER_TAIL.search(text):
                return self._mask_already_cut(text, depth)
            return self._mask_long(text, depth, bound)
        # The same text recurs across a trace: mask it once. A result that parsed JSON is remembered with
        # its depth (the depth decides whether a nested document is too deep to mask, _MAX_DEPTH); any
        # other result is the same at every depth, so it is remembered by the text alone.
        memo = self._memo
        young = memo.young
        cached = young.get(text)
        document = False
        if cached is None:
            document = _json_document(text)
            deep: _MemoKey | None = (text, depth) if document else None
            if deep is not None:
                cached = young.get(deep)
            if cached is None and memo.old:
                cached = memo.recall(text, n)
                if cached is None and deep is not None:
                    cached = memo.recall(deep, n)
        if cached is not None:
            return cached
        key: _MemoKey = text
        if text[-1] == "]" and _MARKER_TAIL.search(text):
            masked = self._mask_already_cut(text, depth)
        elif document:
            raw = self._mask_json_raw(text)
            if raw is None:
                masked = self._mask_json_parsed(text, depth)
                key = (text, depth)
            else:
                masked = raw
        elif text[0] == '"' and text[-1] == '"' and n > 1 and (inner := _json_string(text)) is not None:
            masked = self._mask_json_string(text, inner, depth)
        elif _holds_json(text):  # JSON cut by someone else, broken, or after a prefix: secret members too
            masked = self._scan_unparsed_json(text)
        else:
            masked = self._scan(text)
        if n <= _MEMO_MAX_CHARS:
            memo.put(key, masked, n + len(masked))
        return masked

    def _mask_long(self, text: str, depth: int, bound: int) -> str:
        """Cut first, then detect: the detectors read ``bound`` characters plus a look-ahead, a value that
        straddles the cut is kept whole (it becomes a token), and the result, marker included, is at most
        ``bound`` characters, so a size limit applied afterwards does not cut it again."""
        marker = truncation_marker(len(text))
        limit = max(bound - len(marker), bound // 2, 1)
        window = text[: limit + _LOOKAHEAD]
        cut = limit
        for start, end, _label, _normalized in self._scanner.hits(window):
            if start < cut < end:
                cut = end
                break
            if start >= cut:
                break
        # a cut document is no longer JSON to parse: its secret-named members are found in the raw text
        masked = self._scan_unparsed_json(window[:cut]) if _holds_json(text) else self._scan(window[:cut])
        if len(masked) > limit:
            keep = masked[:limit]
            token = _TOKEN_START.search(keep, max(0, limit - self._hash_chars - 24))
            masked = keep[: token.start()] if token is not None else keep  # never end inside a token
        return masked + marker

    def _mask_already_cut(self, text: str, depth: int) -> str:
        """A string someone cut before masking: mask the kept part, and drop what the cut may have left
        half of (the last value-like characters before the marker)."""
        marker = _MARKER_TAIL.search(text)
        assert marker is not None
        body = text[: marker.start()]
        body = body[: partial_tail_start(body)]
        masked = self._scan_unparsed_json(body) if _holds_json(body) else self._scan(body)
        return masked + text[marker.start() :]

    def _scan_unparsed_json(self, text: str) -> str:
        """JSON that cannot be parsed (cut, broken, or after a prefix): its secret-named members first, while
        its escapes and quotes are intact, then the detectors. The other way round, a detector's token could swallow the
        backslash of an escaped quote (``"password": "a\\"b"``), the strings no longer lined up, and that
        value's rest and every later secret-named member went out raw (found by a hostile review)."""
        return self._scan(self._mask_secret_members(text))

    def _mask_secret_members(self, text: str) -> str:
        """In JSON that cannot be parsed (cut, or broken), the string and number values of members whose
        name says secret (``"api_key": "..."``, ``"pin_password": 1234``; strings also escaped once: JSON
        inside a JSON string), each replaced whole by a secret token, as the parse path does; a value the
        cut ends inside is replaced to the end. The strings are read in order from the start, so a string
        holding a colon cannot shift them."""
        if not _json_names_secret(text) and not (
            # "pass\\u0077ord"; in JSON inside a JSON string, escaped once more: "pass\\\\u0077ord"
            "\\u" in text and _json_names_secret(_NAME_ESCAPE.sub(_decoded_escape, text))
        ):
            return text
        token = self._token
        parts: list[str] = []
        pos = 0
        strings: list[re.Match[str] | None] = [*_RAW_STRING.finditer(text), None]
        for name, value in itertools.pairwise(strings):
            assert name is not None
            colon = _WS_COLON_WS.match(text, name.end())
            if colon is None:
                continue
            if value is not None and value.start() == colon.end():
                if value.group(1) and is_secret_name(_json_unescaped(name.group(1))):
                    parts += [text[pos : value.start(1)], token("secret", value.group(1))]
                    pos = value.end(1)
            elif (number := _JSON_NUMBER.match(text, colon.end())) and is_secret_name(_json_unescaped(name.group(1))):
                # a numeric PIN, quoted as the parse path writes it (its token is a string)
                parts += [text[pos : number.start()], '"', token("secret", str(json.loads(number.group()))), '"']
                pos = number.end()
        text = "".join(parts) + text[pos:] if parts else text
        return _RAW_ESCAPED_MEMBER.sub(self._replacer("secret", _secret_member_value), text)

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

    def _mask_json_raw(self, text: str) -> str | None:
        """Mask a string that looks like a JSON object/array (or is merely bracketed text) on the fast path;
        ``None`` when only the slow path can settle it.

        Fast path: run the detectors over the raw document and put the tokens in place. Tokens contain no
        quote or backslash and no detector match can contain a quote, so a valid document stays valid and
        keeps its own formatting, and no parse is needed. Cases the raw text cannot settle safely (escape
        sequences inside or right before a hit, an escaped non-ASCII domain, a bare JSON number, a key
        that names a secret, user patterns) take the slow path (:meth:`_mask_json_parsed`): parse, mask
        every string, re-serialize. Depth plays no part here, so the memo keeps these results by text alone.

        A long document is settled in pieces cut where a member's value ends before the next key (``", "``,
        ``": 0.25}], "``; :data:`_CHUNK_CUT`), each remembered: no hit or detector context crosses such a
        cut, so the pieces give the document's result, and a document that differs from one seen before by
        a number (a tool's ``duration_ms``) scans only the few members before the number again. Kept
        whole: documents with user patterns (slow path anyway) or a PEM header (a private key's body runs
        to its END line, past any quote). Two results can differ from the whole
        document's only in what no single string would show either: a lower-case IBAN whose own piece has
        no run of 8 digits (found whole only when another value's digits are within 40 characters) and a
        value of over 400 characters holding an escape (the decoded view is read in 400-character windows).
        """
        if self._custom or ('"input"' in text and '"loc"' in text):
            return None  # user patterns; pydantic's errors (e.json()): an input is secret by its "loc"
        n = len(text)
        if n < 2 * _JSON_CHUNK_CHARS or "PRIVATE KEY-----" in text:
            masked, words = self._mask_json_piece(text)
            if masked is None or (words and _json_names_secret(text)):
                return None
            return masked
        memo = self._memo
        young = memo.young
        parts: list[str] = []
        pos = 0
        for end in self._piece_ends(text):
            key = (text[pos:end], _CHUNK_DEPTH)
            found = young.get(key)
            if found is None and memo.old:
                found = memo.recall(key, end - pos)
            if found is None:
                masked, piece_words = self._mask_json_piece(key[0])
                # Remembered as one string: "-" before the masked piece, or "B" alone (only the slow path
                # can settle the document: a detector hit it cannot place, or a key naming a secret, whose
                # value is masked whole). A key, its quotes and its colon never straddle a cut, so the
                # pieces' keys are the document's.
                secret_key = piece_words and _json_names_secret(key[0])
                found = "B" if masked is None or secret_key else "-" + masked
                memo.put(key, found, end - pos + len(found))
            if found == "B":
                return None
            parts.append(found)
            pos = end
        return "".join([part[1:] for part in parts])

    @staticmethod
    def _piece_ends(text: str) -> list[int]:
        """Where the pieces of a long document end (see :data:`_CHUNK_CUT`), the last at its end."""
        n = len(text)
        cut_after = _CHUNK_CUT.search
        numbers = _NUMBER_CUT.finditer(text)
        ends: list[int] = []
        pos = 0
        number = next(numbers, None)
        while True:
            while number is not None and number.end() - 1 - pos < _NUMBER_PIECE_CHARS:
                number = next(numbers, None)
            cut = cut_after(text, pos + _JSON_CHUNK_CHARS) if pos + _JSON_CHUNK_CHARS < n else None
            if number is not None and (cut is None or number.start() < cut.start()):
                cut = number
            if cut is None:
                ends.append(n)
                return ends
            pos = cut.end() - 1
            ends.append(pos)

    def _mask_json_piece(self, text: str) -> tuple[str | None, bool]:
        """The raw path for a whole document or one piece of it: (the masked text, or ``None`` when only the
        parse path can settle it; whether a word that can name a secret occurs)."""
        if "\\u" in text and (_ASCII_ESCAPE.search(text) is not None or ("@" in text and _escaped_domain(text))):
            return None, False
        scan = text
        if "\\" in text:
            if "\\/" in text or ("=" in text and has_quoted_printable(text, escaped_break_only=True)):
                # "030\/901820": an escape inside a value; "exam=\nple.org": a quoted-printable soft line
                # break inside one. Only the parsed string shows them.
                return None, False
            # In the raw text, the escape in "\\n+44 20 ..." must read as a line break, not a letter "n".
            for esc in ("\\n", "\\t", "\\r", "\\b", "\\f"):
                scan = scan.replace(esc, "\\ ")
            if "\\u" in scan:
                # "\\u00e9" stands for one character the raw text cannot show: blank it out, and send any hit
                # touching it to the parse path (below).
                scan = _UNICODE_ESCAPE.sub(_blank_escape, scan)
        hits, secret_words = self._scanner.hits_and_secret_words(scan, True)
        strings: list[tuple[int, int]] | None = None  # the spans of the raw text's strings, when needed
        if secret_words and "\\" in text:
            strings = _string_spans(text)
            if _escapes_near_a_name(text, strings):
                # "password\t=\tx", "password: \"x\"": escapes can hide a secret name's value from the raw
                # text; only the parsed string shows it
                return None, secret_words
        if not hits:
            return text, secret_words
        kept: list[Hit] = []
        for hit in hits:
            start, end = hit[0], hit[1]
            if strings is None:
                strings = _string_spans(text)
            k = bisect.bisect_right(strings, (start, _BIG)) - 1
            if k < 0 or (end > strings[k][1] and '"' not in text[start:end]):
                # outside every string ("set password=", "user": ...): the raw text misread the structure
                return None, secret_words
            if '\\"' in text[start:end]:
                return None, secret_words  # an escaped quote: a string inside a string, only its parse shows it
            if '"' in text[start:end]:
                # A private key whose BEGIN line is in one value and its body in the next values (or
                # array items): each string's part of it becomes a token, the structure between stays.
                parts = _string_parts(text, start, end)
                if parts is None:
                    return None, secret_words
                kept += [(a, b, "secret", text[a:b]) for a, b in parts]
            elif (
                (start > 0 and scan[start - 1] in _ESCAPED)
                or scan[end : end + 1] == "\x00"
                or "\\" in text[start:end]
                or _bare_json_value(text, start, end)
            ):
                return None, secret_words
            else:
                kept.append(hit)
        return self._apply(text, kept), secret_words

    def _mask_json_string(self, text: str, inner: str, depth: int) -> str:
        """A JSON string literal (a tool's output, JSON-encoded once or more): its content is masked as the
        text it is, then written back as JSON. Read raw, its content's quotes hide behind escapes, one more
        level each time it was encoded: a value under a secret name inside could not be told apart."""
        if depth >= _MAX_DEPTH:
            return self._scan(text)
        new = self._mask_text(inner, depth + 1)
        if new is inner or new == inner:
            return text
        return json.dumps(new, ensure_ascii=False)

    def _mask_json_parsed(self, text: str, depth: int) -> str:
        try:
            doc = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except ValueError:  # not JSON, or a key twice (parsing would keep only the last value)
            return self._scan_unparsed_json(text)
        if not isinstance(doc, (dict, list)):
            return self._scan(text)
        new = self._mask_json(doc, depth + 1)
        if new is doc or new == doc:  # masked before: its tokens stay, and so does its formatting
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
            secret_input = "input" in node and _loc_names_secret(node.get("loc"))
            for k, v in node.items():
                nk = self._scan(k)  # a state dump can be keyed by address
                nv: object
                if (v or _is_number(v)) and (is_secret_name(k) or (secret_input and k == "input")):
                    nv = self._secret_strings(v, depth + 1)  # {"authorization": {"credentials": "..."}}, a PIN
                else:
                    nv = self._mask_json(v, depth + 1)
                changed = changed or nk is not k or nv is not v
                out[nk] = nv
            return out if changed else node
        if isinstance(node, list):
            items = [self._mask_json(v, depth + 1) for v in node]
            return items if any(a is not b for a, b in zip(items, node, strict=True)) else node
        if isinstance(node, int) and not isinstance(node, bool) and abs(node) >= _BIG:
            # A card number stored as a JSON number becomes a token string.
            digits = str(node)
            hits = self._scanner.hits(digits)
            return self._apply(digits, hits) if hits else node
        return node

    def _secret_strings(self, node: object, depth: int) -> object:
        """Every non-empty string and every number under a secret-named key, each a secret token (a numeric
        PIN is a secret too; keys, booleans and null stay)."""
        if depth > _MAX_DEPTH:
            raise RecursionError("JSON nested too deeply to mask")
        if isinstance(node, str):
            return self._token("secret", node) if node else node
        if _is_number(node):
            return self._token("secret", str(node))
        if isinstance(node, dict):
            return {k: self._secret_strings(v, depth + 1) for k, v in node.items()}
        if isinstance(node, list):
            return [self._secret_strings(v, depth + 1) for v in node]
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
        if normalized[:1] == "<" and OWN_TOKEN.fullmatch(normalized):
            return normalized  # masked before (a secret-named member's value): masking again changes nothing
        # HMAC-SHA256 (RFC 2104) from precomputed pad states: the same digest as hmac.new(key, msg, sha256),
        # at about half the cost (this runs for every distinct value found).
        inner_pad, outer_pad = self._hmac_pads
        inner = inner_pad.copy()
        inner.update(normalized.encode("utf-8", "surrogatepass"))
        outer = outer_pad.copy()
        outer.update(inner.digest())
        return f"<{label}:{outer.hexdigest()[: self._hash_chars]}>"

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
_NAME_ESCAPE = re.compile(r"\\+u[0-9A-Fa-f]{4}")  # also escaped once more (JSON inside a JSON string)
# A JSON string in raw text (it may run to the end of a cut text); a member escaped once,
# \\"name\\": \\"value\\" (JSON inside a JSON string; its value may hold a quote escaped twice).
_RAW_STRING = re.compile(r'"((?:[^"\\]|\\.)*)(?:"|\\?\Z)')
_WS_COLON_WS = re.compile(r"[ \t\r\n]*:[ \t\r\n]*")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?![0-9A-Za-z_.])")
# The value's escaped-once tokens in order, possessive: an escaped backslash (\\\\ raw) before the closing
# \" is not read as an escaped quote (a Windows path ending in a backslash hid the next member).
_RAW_ESCAPED_MEMBER = re.compile(
    r'\\"((?:[^"\\\n]|\\\\u[0-9a-fA-F]{4}){1,256})\\"[ \t\r\n]*:[ \t\r\n]*'
    r'\\"((?:\\\\\\\\|\\\\\\"|\\[^"]|[^"\\])*+)(?:\\"|\\?\Z)'
)
# An escaped printable ASCII or full-width character ("eve\\u0040example.com"): no JSON encoder needs
# one, so it hides something; only the parsed string shows it to the detectors. The same for the
# characters the detectors' decoded view folds: the small "@" and invisible format characters (soft
# hyphen, zero-width, bidi controls, BOM) that ``ensure_ascii`` escapes inside an address.
_ASCII_ESCAPE = re.compile(
    r"\\u(?:00[2-7][0-9A-Fa-f]|[fF][fF][0-5][0-9A-Fa-f]|00[aA][dD]|061[cC]|180[eE]|200[0-9A-Fa-f]|202[a-fA-F]|206[0-9A-Fa-f]"
    r"|[fF][eE]6[bB]|[fF][eE][fF][fF])"
)
_ESCAPED = ("\\", "\x00")


def _decoded_escape(m: re.Match[str]) -> str:
    return chr(int(m.group()[-4:], 16))


def _blank_escape(_m: re.Match[str]) -> str:
    return "\\\x00\x00\x00\x00\x00"  # same length as "\\u00e9"; \x00 is in no detector's alphabet


_WS_COLON = re.compile(r"[ \t\r\n]*:")


def _json_names_secret(text: str) -> bool:
    """Does the raw JSON have an object key like "password" or "api_key" (whose value we mask whole)?
    Any case (``ToKen``), any whitespace before the colon; each name is judged once."""
    lower = text.lower()
    if len(lower) != len(text):  # a few non-ASCII letters change length when lower-cased
        lower = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    for needle in NAME_NEEDLES:
        p = lower.find(needle)
        while p >= 0:
            close = text.find('"', p)
            if close < 0:
                break
            if _WS_COLON.match(text, close + 1):
                open_ = text.rfind('"', 0, p)
                # JSON inside a JSON string (tool-call arguments in a message list): the key's quotes
                # are escaped, \"password\": its name is what is left without the backslashes.
                if open_ >= 0 and is_secret_name(text[open_ + 1 : close].rstrip("\\")):
                    return True
            p = lower.find(needle, close + 1)  # the rest of this name was judged with it
    return False


def _is_number(value: object) -> bool:
    """An int or float, not a bool (a bool is an int to Python, and names no secret)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_JSON_SPACE = " \t\r\n\ufeff"
_JSON_OPEN = re.compile("[" + _JSON_SPACE + r"]*[{\[]")


_MEMBER = re.compile(r'"[ \t\r\n]*:')


def _holds_json(text: str) -> bool:
    """Text that is, or holds, JSON members (a document, or one after a prefix: ``data: {...}`` of a
    stream, a log line, an exception message): its secret-named members are looked for in the raw text."""
    return _JSON_OPEN.match(text) is not None or _MEMBER.search(text) is not None


def _string_spans(text: str) -> list[tuple[int, int]]:
    """Where the contents of the raw JSON text's strings are, in order."""
    return [m.span(1) for m in _RAW_STRING.finditer(text)]


def _escapes_near_a_name(text: str, strings: list[tuple[int, int]]) -> bool:
    """Does one JSON string of the raw text hold both an escape and a needle of a secret name? Judged per
    string (a piece of a long document holds whole strings), so a document and its pieces agree."""
    for start, end in strings:
        content = text[start:end]
        if "\\" in content:
            lower = content.lower()
            if any(needle in lower for needle in NAME_NEEDLES):
                return True
    return False


def _loc_names_secret(loc: object) -> bool:
    """pydantic's error dict (``e.errors()``, ``e.json()``): ``{"loc": ["creds", "password"], "input":
    "..."}``; the field its ``loc`` ends with names a secret."""
    return isinstance(loc, list) and bool(loc) and isinstance(loc[-1], str) and is_secret_name(loc[-1])


def _json_string(text: str) -> str | None:
    """The content of ``text`` if it is one JSON string literal (``"..."``), else None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def _json_document(text: str) -> bool:
    """Does ``text`` look like one JSON object or array (whitespace or a byte-order mark around it allowed)?"""
    if not _JSON_OPEN.match(text):
        return False
    i = len(text) - 1
    while i > 0 and text[i] in _JSON_SPACE:
        i -= 1
    return text[i] in "}]"


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


_QUOTE_OR_ESCAPE = re.compile(r'\\.|"', re.DOTALL)


def _string_parts(text: str, start: int, end: int) -> list[tuple[int, int]] | None:
    """The parts of ``text[start:end]`` that lie inside JSON strings other than member names; ``None`` unless
    ``start`` is in a string or at its closing quote (``"-----BEGIN PRIVATE KEY-----", "MIIE..."``)."""
    parts: list[tuple[int, int]] = []
    opened = -1  # the open string's quote
    anchored = False
    for m in _QUOTE_OR_ESCAPE.finditer(text, 0, end):
        if m.group() != '"':
            continue
        if opened < 0:
            opened = m.start()
            continue
        lo, hi = max(opened + 1, start), m.start()
        anchored = anchored or opened < start <= hi
        if lo < hi and not _WS_COLON.match(text, hi + 1):  # member names stay
            parts.append((lo, hi))
        opened = -1
    if opened >= 0:
        anchored = anchored or opened < start
        if max(opened + 1, start) < end:
            parts.append((max(opened + 1, start), end))
    return parts if parts and anchored else None


def _secret_member_value(m: re.Match[str]) -> _Span | None:
    """The value of a :data:`_RAW_ESCAPED_MEMBER` match whose name says secret."""
    # the name as the inner document wrote it (escaped once more in the raw text: to\\\\u006ben)
    if not m.group(2) or not is_secret_name(_json_unescaped(_json_unescaped(m.group(1)))):
        return None
    return m.start(2), m.end(2), m.group(2)


def _json_unescaped(name: str) -> str:
    """A raw JSON string's text with its escapes decoded (``pass\\u0077ord``), or as it is if it has none
    or they are broken."""
    if "\\" not in name:
        return name
    try:
        decoded = json.loads(f'"{name}"')
    except ValueError:
        return name.replace("\\", "")
    return decoded if isinstance(decoded, str) else name


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise ValueError("a key occurs twice")
    return doc


def _bare_json_value(text: str, start: int, end: int) -> bool:
    """Could text[start:end] be a JSON number rather than part of a string (``[4111111111111111]``)?"""
    i = start - 1
    if i >= 0 and text[i] == "-":  # a negative number
        i -= 1
    while i >= 0 and text[i] in " \t\r\n":
        i -= 1
    if i < 0 or text[i] not in ":,[":
        return False
    j, n = end, len(text)
    while j < n and text[j] in " \t\r\n":
        j += 1
    return j == n or text[j] in ",]}"


def _renamed(
    attrs: Mapping[str, AnyValue], changes: Mapping[str, AnyValue], renames: Mapping[str, str]
) -> dict[str, AnyValue]:
    """``attrs`` with masked values and keys; two keys that mask to the same name are both kept, the later
    one with a ``#2`` (``#3``...) suffix."""
    out: dict[str, AnyValue] = {}
    for k, v in attrs.items():
        nk = renames.get(k, k)
        if nk in out:
            i = 2
            while f"{nk}#{i}" in out or f"{nk}#{i}" in attrs:
                i += 1
            nk = f"{nk}#{i}"
        out[nk] = changes.get(k, v)
    return out


def _whole_match(m: re.Match[str]) -> _Span | None:
    return m.start(), m.end(), m.group()
