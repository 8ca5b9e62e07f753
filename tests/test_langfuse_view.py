"""The "what Langfuse shows" view, checked rule by rule on hand-made spans.

Each expectation is one of Langfuse's server-side OTLP ingestion rules
(reference/langfuse-otel-ingestion.md); a test fails if the view gets that rule wrong, so tests
that assert on the view can trust it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from otel_basic.otlp_decode import ReceivedEvent, ReceivedSpan
from otel_basic.testing.langfuse_view import langfuse_view, observation_view

TRACE = "0af7651916cd43dd8448eb211c80319c"
T0 = 1_700_000_000_000_000_000


def span(
    name: str,
    span_id: str,
    parent: str | None = None,
    *,
    start: int = 0,
    trace_id: str = TRACE,
    status: str = "UNSET",
    status_message: str = "",
    scope: str = "openinference.instrumentation.llama_index",
    resource: dict[str, Any] | None = None,
    events: list[ReceivedEvent] | None = None,
    **attributes: Any,
) -> ReceivedSpan:
    return ReceivedSpan(
        name=name,
        trace_id=trace_id,
        span_id=span_id.rjust(16, "0"),
        parent_span_id=None if parent is None else parent.rjust(16, "0"),
        kind="INTERNAL",
        start_time_unix_nano=T0 + start * 1_000_000,
        end_time_unix_nano=T0 + (start + 5) * 1_000_000,
        attributes={k.replace("__", "."): v for k, v in attributes.items()},
        events=events or [],
        status_code=status,
        status_message=status_message,
        resource=resource or {"service.name": "svc"},
        scope_name=scope,
    )


def attrs(**kv: Any) -> dict[str, Any]:
    return {k.replace("__", "."): v for k, v in kv.items()}


def test_trace_name_input_output_from_the_root_span() -> None:
    root = span("EmailWorkflow.run", "1", **attrs(input__value='{"email": "hi"}', output__value="done"))
    child = span("step", "2", "1", start=1, **attrs(input__value="child in"))
    view = langfuse_view([child, root])
    trace = view.trace("EmailWorkflow.run")
    assert trace.id == TRACE
    assert trace.input == {"email": "hi"}  # JSON strings are shown parsed
    assert trace.output == "done"  # any other string as text
    assert [o.name for o in trace.observations] == ["EmailWorkflow.run", "step"]
    assert trace.observation("step").parent_id == "1".rjust(16, "0")


def test_langfuse_trace_name_and_trace_io_win_over_the_root_span() -> None:
    root = span(
        "run",
        "1",
        **attrs(langfuse__trace__name="nice name", input__value="raw", langfuse__trace__input='{"q": 1}'),
    )
    trace = langfuse_view([root]).trace("nice name")
    assert trace.input == {"q": 1}
    # langfuse.trace.input is set, so the whole Langfuse branch is taken: output.value is NOT read
    assert trace.output is None


def test_explicit_observation_output_hides_openinference_input() -> None:
    """The server returns at the first convention that has input OR output."""
    s = span("s", "1", **attrs(input__value="in", langfuse__observation__output="out"))
    obs = observation_view(s)
    assert obs.input is None and obs.output == "out"


def test_later_trace_updates_win_and_tags_union_and_metadata_merges() -> None:
    root = span("run", "1", **attrs(langfuse__trace__tags=["a"], langfuse__trace__metadata__team="x"))
    later = span(
        "child",
        "2",
        "1",
        start=2,
        **attrs(
            langfuse__trace__output='"final"',
            langfuse__trace__tags='["b", "a"]',
            langfuse__trace__metadata__org="acme",
            user__id="u-1",
        ),
    )
    plain = span("plain", "3", "1", start=3, **attrs(output__value="ignored for the trace"))
    trace = langfuse_view([root, later, plain]).trace("run")
    assert trace.output == "final"
    assert trace.tags == ["a", "b"]
    assert trace.metadata["team"] == "x" and trace.metadata["org"] == "acme"
    assert trace.user_id == "u-1"


def test_user_and_session_precedence() -> None:
    root = span(
        "run",
        "1",
        **attrs(user__id="plain", langfuse__user__id="lf", session__id="s", gen_ai__conversation__id="conv"),
    )
    trace = langfuse_view([root]).trace("run")
    assert trace.user_id == "lf"
    assert trace.session_id == "s"
    only_conv = langfuse_view([span("r", "1", **attrs(gen_ai__conversation__id="conv"))]).trace("r")
    assert only_conv.session_id == "conv"


def test_openinference_metadata_stays_a_string_and_langfuse_metadata_is_top_level() -> None:
    root = span(
        "run",
        "1",
        metadata=json.dumps({"tenant": "t1"}),
        **attrs(langfuse__trace__metadata__tenant2="t2", langfuse__metadata__obs_key="o"),
    )
    trace = langfuse_view([root]).trace("run")
    assert "tenant" not in trace.metadata
    assert trace.metadata["attributes"]["metadata"] == json.dumps({"tenant": "t1"})
    assert trace.metadata["tenant2"] == "t2"
    obs = trace.observation("run")
    assert obs.metadata["obs_key"] == "o"
    assert "langfuse.trace.metadata.tenant2" not in obs.attributes  # metadata keys leave `attributes`


def test_environment_and_release_span_first_then_resource() -> None:
    res = {"service.name": "svc", "deployment.environment.name": "staging", "langfuse.release": "r1"}
    trace = langfuse_view([span("run", "1", resource=res)]).trace("run")
    assert (trace.environment, trace.release) == ("staging", "r1")
    trace2 = langfuse_view([span("run", "1", resource=res, **attrs(langfuse__environment="prod"))]).trace("run")
    assert trace2.environment == "prod"
    assert langfuse_view([span("run", "1")]).trace("run").environment == "default"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"openinference.span.kind": "LLM"}, "GENERATION"),
        ({"openinference.span.kind": "TOOL"}, "TOOL"),
        ({"openinference.span.kind": "CHAIN"}, "CHAIN"),
        ({"openinference.span.kind": "AGENT"}, "AGENT"),
        ({"openinference.span.kind": "UNKNOWN"}, "SPAN"),
        ({}, "SPAN"),
        ({"openinference.span.kind": "CHAIN", "langfuse.observation.type": "generation"}, "GENERATION"),
        ({"gen_ai.operation.name": "chat"}, "GENERATION"),
    ],
)
def test_observation_type(extra: dict[str, Any], expected: str) -> None:
    assert observation_view(span("s", "1", **extra)).type == expected


@pytest.mark.parametrize(
    ("level_attr", "status", "expected"),
    [
        (None, "UNSET", "DEFAULT"),
        (None, "ERROR", "ERROR"),
        ("WARNING", "UNSET", "WARNING"),
        ("warn", "UNSET", "WARNING"),
        ("DEBUG", "ERROR", "DEBUG"),  # the attribute wins over the status
        ("INFO", "UNSET", "DEFAULT"),
        ("nonsense", "ERROR", "ERROR"),  # unknown values fall back to the status rule
    ],
)
def test_observation_level(level_attr: str | None, status: str, expected: str) -> None:
    extra: dict[str, Any] = {} if level_attr is None else {"langfuse.observation.level": level_attr}
    assert observation_view(span("s", "1", status=status, **extra)).level == expected


def test_status_message_attribute_first_then_span_status() -> None:
    assert observation_view(span("s", "1", status="ERROR", status_message="boom")).status_message == "boom"
    s = span("s", "1", status="ERROR", status_message="boom", **attrs(langfuse__observation__status_message="clear"))
    assert observation_view(s).status_message == "clear"
    assert observation_view(span("s", "1")).status_message is None


def test_span_events_are_invisible() -> None:
    event = ReceivedEvent("exception", T0, {"exception.stacktrace": "Traceback ...", "exception.message": "x"})
    obs = observation_view(span("s", "1", events=[event]))
    assert obs.level == "DEFAULT" and obs.status_message is None and obs.output is None
    assert "Traceback" not in json.dumps(obs.metadata)


def test_generation_model_parameters_usage_and_completion_start() -> None:
    s = span(
        "llm",
        "1",
        **attrs(
            openinference__span__kind="LLM",
            llm__model_name="gpt-x",
            llm__invocation_parameters=json.dumps({"temperature": 0.2, "stop": ["\n"]}),
            llm__token_count__prompt=12,
            llm__token_count__completion=3,
            llm__token_count__total=15,
            langfuse__observation__completion_start_time="2026-01-01T00:00:00.5Z",
            llm__prompts=["p"],
        ),
    )
    obs = observation_view(s)
    assert obs.type == "GENERATION" and obs.model == "gpt-x"
    assert obs.model_parameters == {"temperature": 0.2, "stop": '["\\n"]'}
    assert obs.usage == {"input": 12, "output": 3, "total": 15}
    assert obs.completion_start_time is not None and obs.completion_start_time.microsecond == 500_000
    assert obs.attributes["llm.prompts"] == '["p"]'  # not an I/O key: stored (again) in metadata


def test_llm_messages_are_nested_when_no_input_value() -> None:
    s = span(
        "llm",
        "1",
        **{  # type: ignore[arg-type]  # dotted keys cannot be keyword names
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": "hi",
            "llm.output_messages.0.message.content": "yo",
        },
    )
    obs = observation_view(s)
    assert obs.input == [{"message": {"role": "user", "content": "hi"}}]
    assert obs.output == [{"message": {"content": "yo"}}]


def test_langfuse_sdk_spans_have_no_attributes_in_metadata() -> None:
    s = span("obs", "1", scope="langfuse-sdk", **attrs(langfuse__observation__metadata__k='"v"'))
    obs = observation_view(s)
    assert "attributes" not in obs.metadata
    assert obs.metadata["k"] == '"v"'  # stored as sent: a quoted value stays quoted


def test_scores_attach_to_their_trace_and_upsert_by_id() -> None:
    root = span("run", "1")
    scores = [
        {"id": "s1", "traceId": TRACE, "name": "passed", "value": 1.0, "dataType": "BOOLEAN"},
        {"id": "s1", "traceId": TRACE, "name": "passed", "value": 0.0, "dataType": "BOOLEAN"},
        {"id": "s2", "traceId": "f" * 32, "name": "elsewhere", "value": 2},
    ]
    view = langfuse_view([root], scores=scores)
    trace = view.trace("run")
    assert trace.score("passed").value == 0.0
    assert [s.name for s in view.orphan_scores] == ["elsewhere"]


def test_resent_span_replaces_the_earlier_copy_and_traces_split_by_id() -> None:
    first = span("run", "1", **attrs(output__value="old"))
    again = span("run", "1", **attrs(output__value="new"))
    other = span("run", "1", trace_id="1" * 32)
    view = langfuse_view([first, again, other])
    assert len(view.traces) == 2
    assert view.traces[TRACE].output == "new"
    assert len(view.traces[TRACE].observations) == 1
    with pytest.raises(AssertionError, match="expected one trace named 'run', found 2"):
        view.trace("run")


def test_trace_without_its_root_has_no_name() -> None:
    orphan = span("child", "2", "1")
    view = langfuse_view([orphan])
    (trace,) = view.traces.values()
    assert trace.name is None and trace.input is None
    assert trace.observations[0].name == "child"


def test_flattened_model_parameters() -> None:
    flat = {"gen_ai.request.temperature": 0.1, "gen_ai.request.model": "m", "llm.invocation_parameters.top_p": 0.9}
    s = span("llm", "1", **flat)  # type: ignore[arg-type]
    assert observation_view(s).model_parameters == {"temperature": 0.1, "top_p": 0.9}
    assert observation_view(s).model == "m"
