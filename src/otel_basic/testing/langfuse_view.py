"""What a Langfuse user will see, computed from the spans a receiver got.

Tests should assert on what a person sees in Langfuse (trace name, input, output, user, session,
levels, status messages, metadata, generations with model and usage, scores), not on raw span
attributes: an attribute Langfuse does not read is invisible, however correct it looks. This module
applies Langfuse's server-side OTLP ingestion rules (``OtelIngestionProcessor`` and the worker's
trace merge, summarised in ``reference/langfuse-otel-ingestion.md``) to
:class:`~otel_basic.otlp_decode.ReceivedSpan` values::

    view = langfuse_view(receiver.spans, scores=receiver.scores)
    trace = view.trace("email-workflow")
    assert trace.user_id == "u-9"
    assert trace.observation("llm.complete").type == "GENERATION"

Only the rules that matter for OTLP senders like ours are modelled (Langfuse SDK, OpenInference,
OpenTelemetry GenAI attributes). Span events are ignored, as Langfuse ignores them; the one
exception Langfuse makes, ``gen_ai.*`` message events read as input/output, is not modelled
(none of our senders emit them). Pure functions over plain data: no I/O, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from otel_basic.otlp_decode import ReceivedSpan

__all__ = [
    "LangfuseView",
    "ObservationView",
    "ScoreView",
    "TraceView",
    "langfuse_view",
    "observation_view",
    "parse_json_value",
    "scores_from_span_events",
]

# Attribute names, as Langfuse's server spells them (packages/shared/src/server/otel/attributes.ts).
TRACE_NAME = "langfuse.trace.name"
TRACE_INPUT = "langfuse.trace.input"
TRACE_OUTPUT = "langfuse.trace.output"
TRACE_TAGS = "langfuse.trace.tags"
TRACE_PUBLIC = "langfuse.trace.public"
TRACE_METADATA = "langfuse.trace.metadata"
OBS_TYPE = "langfuse.observation.type"
OBS_METADATA = "langfuse.observation.metadata"
OBS_LEVEL = "langfuse.observation.level"
OBS_STATUS_MESSAGE = "langfuse.observation.status_message"
OBS_INPUT = "langfuse.observation.input"
OBS_OUTPUT = "langfuse.observation.output"
OBS_COMPLETION_START = "langfuse.observation.completion_start_time"
OBS_MODEL = "langfuse.observation.model.name"
OBS_MODEL_PARAMETERS = "langfuse.observation.model.parameters"
OBS_USAGE = "langfuse.observation.usage_details"
AS_ROOT = "langfuse.internal.as_root"

_LEVELS = {
    "DEBUG": "DEBUG",
    "TRACE": "DEBUG",
    "VERBOSE": "DEBUG",
    "DEFAULT": "DEFAULT",
    "INFO": "DEFAULT",
    "LOG": "DEFAULT",
    "NOTICE": "DEFAULT",
    "OK": "DEFAULT",
    "SUCCESS": "DEFAULT",
    "WARNING": "WARNING",
    "WARN": "WARNING",
    "ERROR": "ERROR",
    "FATAL": "ERROR",
    "CRITICAL": "ERROR",
}
_LANGFUSE_TYPES = {
    "span": "SPAN",
    "generation": "GENERATION",
    "event": "EVENT",
    "embedding": "EMBEDDING",
    "agent": "AGENT",
    "tool": "TOOL",
    "chain": "CHAIN",
    "retriever": "RETRIEVER",
    "guardrail": "GUARDRAIL",
    "evaluator": "EVALUATOR",
}
_OPENINFERENCE_TYPES = {
    "CHAIN": "CHAIN",
    "RETRIEVER": "RETRIEVER",
    "LLM": "GENERATION",
    "EMBEDDING": "EMBEDDING",
    "AGENT": "AGENT",
    "TOOL": "TOOL",
    "GUARDRAIL": "GUARDRAIL",
    "EVALUATOR": "EVALUATOR",
}
_GEN_AI_OPERATION_TYPES = {
    "chat": "GENERATION",
    "completion": "GENERATION",
    "text_completion": "GENERATION",
    "generate_content": "GENERATION",
    "generate": "GENERATION",
    "embeddings": "EMBEDDING",
    "invoke_agent": "AGENT",
    "create_agent": "AGENT",
    "execute_tool": "TOOL",
}
# Keys Langfuse treats as input/output: removed from metadata.attributes.
_IO_KEYS = frozenset(
    {
        TRACE_INPUT,
        TRACE_OUTPUT,
        OBS_INPUT,
        OBS_OUTPUT,
        "input.value",
        "output.value",
        "input",
        "output",
        "prompt",
        "events",
        "all_messages_events",
        "mlflow.spanInputs",
        "mlflow.spanOutputs",
        "traceloop.entity.input",
        "traceloop.entity.output",
        "gen_ai.system_instructions",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
    }
)
_IO_PREFIXES = (
    "gen_ai.prompt",
    "gen_ai.completion",
    "llm.input_messages",
    "llm.output_messages",
    TRACE_METADATA,
    OBS_METADATA,
    "ai.telemetry.metadata",
)
_USER_KEYS = ("langfuse.user.id", "user.id", f"{OBS_METADATA}.langfuse_user_id", f"{TRACE_METADATA}.langfuse_user_id")
_SESSION_KEYS = (
    "langfuse.session.id",
    "session.id",
    "gen_ai.conversation.id",
    f"{OBS_METADATA}.langfuse_session_id",
    f"{TRACE_METADATA}.langfuse_session_id",
)
_TAG_KEYS = (
    TRACE_TAGS,
    "langfuse.tags",
    f"{OBS_METADATA}.langfuse_tags",
    f"{TRACE_METADATA}.langfuse_tags",
    "tag.tags",
)
_TRACE_UPDATE_KEYS = (
    TRACE_NAME,
    TRACE_INPUT,
    TRACE_OUTPUT,
    TRACE_METADATA,
    "user.id",
    "session.id",
    TRACE_PUBLIC,
    TRACE_TAGS,
    "langfuse.user.id",
    "langfuse.session.id",
    f"{OBS_METADATA}.langfuse_user_id",
    f"{OBS_METADATA}.langfuse_session_id",
    f"{OBS_METADATA}.langfuse_tags",
    f"{TRACE_METADATA}.langfuse_session_id",
    f"{TRACE_METADATA}.langfuse_user_id",
    f"{TRACE_METADATA}.langfuse_tags",
    "tag.tags",
)
_MODEL_KEYS = (
    OBS_MODEL,
    "gen_ai.response.model",
    "ai.model.id",
    "gen_ai.request.model",
    "llm.response.model",
    "llm.model_name",
    "model",
)
_ENVIRONMENT_KEYS = ("langfuse.environment", "deployment.environment.name", "deployment.environment")


# --------------------------------------------------------------------------- value helpers


def _truthy(value: Any) -> bool:
    """JavaScript truthiness, which is what the server's ``||`` and ``if (x)`` tests use."""
    if value is None or value is False:
        return False
    if isinstance(value, int | float) and value == 0:
        return False
    return not (isinstance(value, str) and value == "")


def _meaningful(value: Any) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, list | dict):
        return len(value) > 0
    return True


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _first(attrs: Mapping[str, Any], keys: Iterable[str]) -> str | None:
    for key in keys:
        if _truthy(attrs.get(key)):
            return _as_text(attrs[key])
    return None


def parse_json_value(value: Any) -> Any:
    """What the Langfuse UI renders: a JSON string is shown parsed, any other string as text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _time(nanos: int) -> datetime:
    return datetime.fromtimestamp(nanos / 1e9, tz=UTC)


def _parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    for candidate in (value, parse_json_value(value)):
        if isinstance(candidate, str):
            try:
                parsed = datetime.fromisoformat(candidate.replace("Z", "+00:00"))
            except ValueError:
                continue
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _nest(attrs: Mapping[str, Any], prefix: str) -> Any:
    """Langfuse's convertKeyPathToNestedObject: ``llm.input_messages.0.message.role`` -> list/dict."""
    keys = {k[len(prefix) + 1 :]: v for k, v in attrs.items() if k.startswith(prefix + ".")}
    if any(k.split(".", 1)[0].isdigit() for k in keys):
        items: dict[int, dict[str, Any]] = {}
        for key, value in keys.items():
            head, _, rest = key.partition(".")
            if not head.isdigit():
                continue
            _set_path(items.setdefault(int(head), {}), rest.split(".") if rest else ["value"], value)
        return [items[i] for i in sorted(items)]
    out: dict[str, Any] = {}
    for key, value in keys.items():
        _set_path(out, key.split("."), value)
    return out


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        nxt = target.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            target[part] = nxt
        target = nxt
    target[path[-1]] = value


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = dict(value) if isinstance(value, Mapping) else value
    return out


# --------------------------------------------------------------------------- extraction rules


def _extract_io(attrs: Mapping[str, Any], *, trace_domain: bool) -> tuple[Any, Any]:
    """The server's extractInputAndOutput for our senders' conventions (events are ignored)."""
    inp = attrs[TRACE_INPUT] if trace_domain and _truthy(attrs.get(TRACE_INPUT)) else attrs.get(OBS_INPUT)
    out = attrs[TRACE_OUTPUT] if trace_domain and _truthy(attrs.get(TRACE_OUTPUT)) else attrs.get(OBS_OUTPUT)
    if inp is not None or out is not None:
        return inp, out
    for in_key, out_key in (
        ("mlflow.spanInputs", "mlflow.spanOutputs"),
        ("traceloop.entity.input", "traceloop.entity.output"),
        ("input.value", "output.value"),
        ("input", "output"),
    ):
        inp, out = attrs.get(in_key), attrs.get(out_key)
        if _truthy(inp) or _truthy(out):
            return inp, out
    if any(k.startswith("gen_ai.prompt") or k.startswith("gen_ai.completion") for k in attrs):
        return _nest(attrs, "gen_ai.prompt"), _nest(attrs, "gen_ai.completion")
    if any(k.startswith("llm.input_messages") or k.startswith("llm.output_messages") for k in attrs):
        return _nest(attrs, "llm.input_messages"), _nest(attrs, "llm.output_messages")
    for in_key, out_key in (
        ("gen_ai.input.messages", "gen_ai.output.messages"),
        ("gen_ai.tool.call.arguments", "gen_ai.tool.call.result"),
    ):
        inp, out = attrs.get(in_key), attrs.get(out_key)
        if _truthy(inp) or _truthy(out):
            return inp, out
    return None, None


def _filtered_attributes(attrs: Mapping[str, Any]) -> dict[str, str]:
    """``metadata.attributes``: every span attribute except I/O keys, non-strings JSON-encoded."""
    return {
        key: _as_text(value) for key, value in attrs.items() if key not in _IO_KEYS and not key.startswith(_IO_PREFIXES)
    }


def _extract_metadata(attrs: Mapping[str, Any], domain: str) -> dict[str, Any]:
    prefix = OBS_METADATA if domain == "observation" else TRACE_METADATA
    top: dict[str, Any] = {}
    whole = attrs.get(prefix) if _truthy(attrs.get(prefix)) else attrs.get("langfuse.metadata")
    if isinstance(whole, str):
        parsed = parse_json_value(whole)
        if isinstance(parsed, dict):
            top = parsed
    elif isinstance(whole, Mapping):
        top = dict(whole)
    prefixed: dict[str, Any] = {}
    for key, value in attrs.items():
        for p in (prefix, "langfuse.metadata", "ai.telemetry.metadata"):
            if key.startswith(p + ".") and len(key) > len(p) + 1:
                if p == "ai.telemetry.metadata" and key.rsplit(".", 1)[-1] in {
                    "userId",
                    "sessionId",
                    "tags",
                    "langfusePrompt",
                }:
                    continue
                prefixed[key[len(p) + 1 :]] = value
    return {**top, **prefixed}


def _extract_tags(attrs: Mapping[str, Any]) -> list[str]:
    value: Any = None
    for key in _TAG_KEYS:
        if _truthy(attrs.get(key)):
            value = attrs[key]
            break
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str):
        if value.strip().startswith("["):
            parsed = parse_json_value(value)
            if isinstance(parsed, list):
                return [str(v) for v in parsed]
        if "," in value:
            return [t.strip() for t in value.split(",")]
        return [value]
    return []


def _extract_environment(attrs: Mapping[str, Any], resource: Mapping[str, Any]) -> str:
    for key in _ENVIRONMENT_KEYS:
        if _truthy(attrs.get(key)):
            return str(attrs[key])
        if _truthy(resource.get(key)):
            return str(resource[key])
    return "default"


def _extract_name(span: ReceivedSpan) -> str:
    attrs = span.attributes
    if _truthy(attrs.get("gen_ai.tool.name")):
        return _as_text(attrs["gen_ai.tool.name"])
    if _truthy(attrs.get("logfire.msg")):
        return _as_text(attrs["logfire.msg"])
    return span.name


def _extract_type(span: ReceivedSpan) -> str:
    attrs = span.attributes
    lf_type = attrs.get(OBS_TYPE)
    if _meaningful(lf_type) and str(lf_type) in _LANGFUSE_TYPES:
        return _LANGFUSE_TYPES[str(lf_type)]
    for key, table in (
        ("openinference.span.kind", _OPENINFERENCE_TYPES),
        ("gen_ai.operation.name", _GEN_AI_OPERATION_TYPES),
    ):
        value = attrs.get(key)
        if _meaningful(value) and str(value) in table:
            return table[str(value)]
    return "SPAN"


def _extract_level(span: ReceivedSpan) -> str:
    raw = span.attributes.get(OBS_LEVEL)
    if isinstance(raw, str) and raw.strip().upper() in _LEVELS:
        return _LEVELS[raw.strip().upper()]
    return "ERROR" if span.status_code == "ERROR" else "DEFAULT"


def _sanitize_params(params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        return {}
    return {
        k: v if isinstance(v, str | int | float) and not isinstance(v, bool) else json.dumps(v)
        for k, v in params.items()
    }


def _extract_model_parameters(attrs: Mapping[str, Any]) -> dict[str, Any]:
    for key in (OBS_MODEL_PARAMETERS, "llm.invocation_parameters", "model_config"):
        if _truthy(attrs.get(key)):
            parsed = parse_json_value(attrs[key])
            if isinstance(parsed, dict):
                return _sanitize_params(parsed)
    flattened: dict[str, Any] = {}
    for prefix in ("gen_ai.request.", "llm.invocation_parameters."):
        for key, value in attrs.items():
            if key.startswith(prefix) and key[len(prefix) :] != "model":
                flattened[key[len(prefix) :]] = value
    return _sanitize_params(flattened)


def _extract_usage(attrs: Mapping[str, Any]) -> dict[str, float]:
    if _truthy(attrs.get(OBS_USAGE)):
        parsed = parse_json_value(attrs[OBS_USAGE])
        if isinstance(parsed, dict):
            return {str(k): v for k, v in parsed.items() if isinstance(v, int | float)}
    raw: dict[str, float] = {}
    for key, value in attrs.items():
        if (key.startswith("gen_ai.usage.") and key != "gen_ai.usage.cost") or key.startswith("llm.token_count."):
            short = key.removeprefix("gen_ai.usage.").removeprefix("llm.token_count.")
            try:
                raw[short] = float(value)
            except (TypeError, ValueError):
                continue
    usage: dict[str, float] = {}
    for target, names in (
        ("input", ("prompt_tokens", "input_tokens", "prompt")),
        ("output", ("completion_tokens", "output_tokens", "completion")),
        ("total", ("total_tokens", "total")),
    ):
        for name in names:
            if name in raw:
                number = raw[name]
                usage[target] = int(number) if number.is_integer() else number
                break
    return usage


def _is_langfuse_sdk(span: ReceivedSpan) -> bool:
    return span.scope_name.startswith("langfuse-sdk")


def _is_root(span: ReceivedSpan) -> bool:
    return span.parent_span_id is None or str(span.attributes.get(AS_ROOT)).lower() == "true"


def _has_trace_updates(attrs: Mapping[str, Any]) -> bool:
    return any(_truthy(attrs.get(k)) for k in _TRACE_UPDATE_KEYS) or any(k.startswith(TRACE_METADATA) for k in attrs)


# --------------------------------------------------------------------------- views


@dataclass(frozen=True)
class ScoreView:
    """One score as Langfuse stores it (POST /api/public/scores; same id = same score)."""

    id: str | None
    name: str
    value: Any
    trace_id: str | None = None
    observation_id: str | None = None
    session_id: str | None = None
    data_type: str | None = None
    comment: str | None = None
    metadata: Any = None
    environment: str | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ScoreView:
        """From the JSON body of a score create request (camelCase API field names)."""
        return cls(
            id=body.get("id"),
            name=str(body.get("name")),
            value=body.get("value"),
            trace_id=body.get("traceId"),
            observation_id=body.get("observationId"),
            session_id=body.get("sessionId"),
            data_type=body.get("dataType"),
            comment=body.get("comment"),
            metadata=body.get("metadata"),
            environment=body.get("environment"),
        )


@dataclass(frozen=True)
class ObservationView:
    """One observation (one span), the fields Langfuse shows for it."""

    id: str
    trace_id: str
    parent_id: str | None
    name: str
    type: str
    level: str
    status_message: str | None
    input: Any
    output: Any
    model: str | None
    model_parameters: dict[str, Any]
    usage: dict[str, float]
    metadata: dict[str, Any]
    start_time: datetime
    end_time: datetime
    completion_start_time: datetime | None
    environment: str = "default"

    @property
    def attributes(self) -> dict[str, str]:
        """``metadata.attributes``: span attributes Langfuse kept as strings (empty for SDK spans)."""
        value = self.metadata.get("attributes")
        return dict(value) if isinstance(value, dict) else {}


@dataclass
class TraceView:
    """One trace, after Langfuse merged every trace event of it."""

    id: str
    name: str | None = None
    input: Any = None
    output: Any = None
    user_id: str | None = None
    session_id: str | None = None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    environment: str = "default"
    release: str | None = None
    version: str | None = None
    public: bool | None = None
    observations: list[ObservationView] = field(default_factory=list)
    scores: list[ScoreView] = field(default_factory=list)

    def observation(self, name: str) -> ObservationView:
        """The single observation with this name (AssertionError when there are none or several)."""
        found = self.observations_named(name)
        if len(found) != 1:
            names = sorted({o.name for o in self.observations})
            raise AssertionError(
                f"expected one observation named {name!r} in trace {self.name!r}, found {len(found)}; names: {names}"
            )
        return found[0]

    def observations_named(self, name: str) -> list[ObservationView]:
        return [o for o in self.observations if o.name == name]

    @property
    def generations(self) -> list[ObservationView]:
        return [o for o in self.observations if o.type == "GENERATION"]

    @property
    def root(self) -> ObservationView | None:
        """The observation without a parent (None when the root span never arrived)."""
        roots = [o for o in self.observations if o.parent_id is None]
        return roots[0] if roots else None

    def score(self, name: str) -> ScoreView:
        """The single score with this name (AssertionError otherwise)."""
        found = [s for s in self.scores if s.name == name]
        if len(found) != 1:
            raise AssertionError(f"expected one score named {name!r}, found {len(found)}: {self.scores!r}")
        return found[0]

    def children(self, observation: ObservationView) -> list[ObservationView]:
        return [o for o in self.observations if o.parent_id == observation.id]

    @property
    def level(self) -> str:
        """The most severe observation level (what the trace list's error filter finds)."""
        order = ("DEBUG", "DEFAULT", "WARNING", "ERROR")
        return max((o.level for o in self.observations), key=order.index, default="DEFAULT")


@dataclass
class LangfuseView:
    """Every trace Langfuse would show, by trace id (hex), plus scores not tied to a known trace."""

    traces: dict[str, TraceView]
    orphan_scores: list[ScoreView] = field(default_factory=list)

    def trace(self, name: str) -> TraceView:
        """The single trace with this name (AssertionError when there are none or several)."""
        found = self.traces_named(name)
        if len(found) != 1:
            names = sorted(str(t.name) for t in self.traces.values())
            raise AssertionError(f"expected one trace named {name!r}, found {len(found)}; trace names: {names}")
        return found[0]

    def traces_named(self, name: str) -> list[TraceView]:
        return [t for t in self.traces.values() if t.name == name]


def observation_view(span: ReceivedSpan) -> ObservationView:
    """One span as a Langfuse observation (the server's createObservationEvent)."""
    attrs = span.attributes
    inp, out = _extract_io(attrs, trace_domain=False)
    metadata: dict[str, Any] = {
        **_extract_metadata(span.resource, "trace"),
        **_extract_metadata(attrs, "observation"),
    }
    if not _is_langfuse_sdk(span):
        metadata["attributes"] = _filtered_attributes(attrs)
    metadata["resourceAttributes"] = dict(span.resource)
    metadata["scope"] = {"name": span.scope_name, "version": span.scope_version}
    status = attrs.get(OBS_STATUS_MESSAGE)
    if status is None:
        status = span.status_message or None
    return ObservationView(
        id=span.span_id,
        trace_id=span.trace_id,
        parent_id=span.parent_span_id,
        name=_extract_name(span),
        type=_extract_type(span),
        level=_extract_level(span),
        status_message=None if status is None else str(status),
        input=parse_json_value(inp),
        output=parse_json_value(out),
        model=_first(attrs, _MODEL_KEYS),
        model_parameters=_extract_model_parameters(attrs),
        usage=_extract_usage(attrs),
        metadata=metadata,
        start_time=_time(span.start_time_unix_nano),
        end_time=_time(span.end_time_unix_nano),
        completion_start_time=_parse_iso(attrs.get(OBS_COMPLETION_START)),
        environment=_extract_environment(attrs, span.resource),
    )


def _trace_event(span: ReceivedSpan) -> dict[str, Any] | None:
    """The server's createTraceEvent for one span: None when the span carries no trace fields."""
    attrs = span.attributes
    root = _is_root(span)
    if not root and not _has_trace_updates(attrs):
        return None  # at most a shallow trace (id, timestamp, environment): nothing to merge
    resource_meta = _extract_metadata(span.resource, "trace")
    scope = {"name": span.scope_name, "version": span.scope_version}
    event: dict[str, Any] = {
        "release": attrs.get("langfuse.release") or span.resource.get("langfuse.release"),
        "version": attrs.get("langfuse.version") or span.resource.get("service.version"),
        "user_id": _first(attrs, _USER_KEYS),
        "session_id": _first(attrs, _SESSION_KEYS),
        "tags": _extract_tags(attrs),
        "environment": _extract_environment(attrs, span.resource),
    }
    public = attrs.get(TRACE_PUBLIC, attrs.get("langfuse.public"))
    event["public"] = None if public is None else public in (True, "true")
    if root:
        inp, out = _extract_io(attrs, trace_domain=True)
        name = attrs.get(TRACE_NAME)
        event["name"] = str(name) if name is not None else _extract_name(span)
        metadata = {**resource_meta, **_extract_metadata(attrs, "trace"), **_extract_metadata(attrs, "observation")}
        if not _is_langfuse_sdk(span):
            metadata["attributes"] = _filtered_attributes(attrs)
    else:
        inp, out = attrs.get(TRACE_INPUT), attrs.get(TRACE_OUTPUT)
        event["name"] = attrs.get(TRACE_NAME)
        metadata = {**resource_meta, **_extract_metadata(attrs, "trace")}
    metadata["resourceAttributes"] = dict(span.resource)
    metadata["scope"] = scope
    event["metadata"] = metadata
    event["input"], event["output"] = inp, out
    return event


def _merge_trace(trace: TraceView, event: Mapping[str, Any]) -> None:
    """The worker's merge: later events overwrite set fields; tags union; metadata deep-merges."""
    for key, value in event.items():
        if value is None or (isinstance(value, dict | list) and not value):
            continue
        if key == "tags":
            trace.tags = list(dict.fromkeys([*trace.tags, *value]))
        elif key == "metadata":
            trace.metadata = _deep_merge(trace.metadata, value)
        elif key in ("input", "output"):
            setattr(trace, key, parse_json_value(value))
        else:
            setattr(trace, key, value)


def langfuse_view(spans: Sequence[ReceivedSpan], scores: Iterable[Mapping[str, Any] | ScoreView] = ()) -> LangfuseView:
    """Apply Langfuse's ingestion rules to ``spans`` (e.g. ``receiver.spans``) and ``scores``
    (e.g. ``receiver.scores``: score request bodies). Spans re-sent with the same id replace the
    earlier copy, as Langfuse upserts by id; so do scores."""
    latest: dict[tuple[str, str], ReceivedSpan] = {}
    for span in spans:
        latest[(span.trace_id, span.span_id)] = span
    by_trace: dict[str, list[ReceivedSpan]] = {}
    for span in latest.values():
        by_trace.setdefault(span.trace_id, []).append(span)
    traces: dict[str, TraceView] = {}
    for trace_id, trace_spans in by_trace.items():
        ordered = sorted(trace_spans, key=lambda s: s.start_time_unix_nano)
        trace = TraceView(id=trace_id)
        trace.environment = _extract_environment(ordered[0].attributes, ordered[0].resource)
        for span in ordered:
            event = _trace_event(span)
            if event is not None:
                _merge_trace(trace, event)
        trace.observations = [observation_view(s) for s in ordered]
        traces[trace_id] = trace
    unique: dict[Any, ScoreView] = {}
    for i, raw in enumerate(scores):
        score = raw if isinstance(raw, ScoreView) else ScoreView.from_body(raw)
        unique[score.id if score.id is not None else ("no-id", i)] = score
    orphans: list[ScoreView] = []
    for score in unique.values():
        if score.trace_id is not None and score.trace_id in traces:
            traces[score.trace_id].scores.append(score)
        else:
            orphans.append(score)
    return LangfuseView(traces=traces, orphan_scores=orphans)


def scores_from_span_events(spans: Iterable[ReceivedSpan]) -> list[ScoreView]:
    """Scores recorded by :func:`otel_basic.score_current_trace` as ``otel_basic.score`` span events.

    Langfuse ignores these events (it gets the score itself from the Langfuse client); they let
    an OTLP file (``otel-basic demo`` offline) or another backend show the same scores.
    """
    out: list[ScoreView] = []
    for span in spans:
        for event in span.events:
            if event.name != "otel_basic.score":
                continue
            a = event.attributes
            out.append(
                ScoreView(
                    id=a.get("score.id"),
                    name=str(a.get("score.name")),
                    value=a.get("score.value"),
                    trace_id=span.trace_id,
                    observation_id=a.get("score.observation_id"),
                    data_type=a.get("score.data_type"),
                    comment=a.get("score.comment"),
                )
            )
    return out
