"""LLM calls as Langfuse shows them: one generation per HTTP exchange, real usage, readable messages,
times that match the exchange. Real HTTP both ways: llama-index's OpenAI client against the local
OpenAI-compatible server, our export against the Langfuse receiver; assertions on the
"what Langfuse shows" view."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    CompletionResponse,
    LLMMetadata,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.llms.openai import OpenAI

import otel_basic
from basic.llm import OfflineLLM
from otel_basic.testing import LangfuseReceiver
from otel_basic.testing.langfuse_view import LangfuseView, ObservationView, langfuse_view
from otel_basic.testing.openai_server import OpenAICompatServer, usage_for

MESSAGES = [
    ChatMessage(role="system", content="You are terse."),
    ChatMessage(role="user", content="What is the capital of France?"),
]
EXPECTED_INPUT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture
def server() -> Iterator[OpenAICompatServer]:
    with OpenAICompatServer(first_token_delay=0.05, chunk_delay=0.005) as srv:
        yield srv


def _llm(server: OpenAICompatServer, **kwargs: Any) -> OpenAI:
    return OpenAI(model="gpt-4o-mini", api_key="sk-test", api_base=server.base_url, max_retries=0, **kwargs)


def _view(receiver: LangfuseReceiver) -> LangfuseView:
    report = otel_basic.flush(timeout=5)
    assert report, report
    return langfuse_view(receiver.spans)


def _generations(view: LangfuseView) -> list[ObservationView]:
    return [o for t in view.traces.values() for o in t.observations if o.type == "GENERATION"]


def _usage(body: dict[str, Any]) -> dict[str, int]:
    u = usage_for(body)
    return {"input": u["prompt_tokens"], "output": u["completion_tokens"], "total": u["total_tokens"]}


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


async def test_chat_is_one_generation_with_model_usage_and_messages(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver, server: OpenAICompatServer
) -> None:
    response = await _llm(server).achat(MESSAGES)
    assert response.message.content == "You said: What is the capital of France?"
    [gen] = _generations(_view(langfuse_env))
    assert gen.model == "gpt-4o-mini"
    assert gen.usage == _usage(server.requests[0])
    assert gen.input == EXPECTED_INPUT
    assert gen.output == {"role": "assistant", "content": "You said: What is the capital of France?"}
    assert "llm.prompts" not in gen.attributes


@pytest.mark.parametrize("sync", [False, True])
async def test_streamed_chat_asks_for_usage_and_counts_it_once(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver, server: OpenAICompatServer, sync: bool
) -> None:
    llm = _llm(server)
    if sync:
        text = "".join(r.delta or "" for r in llm.stream_chat(MESSAGES))
    else:
        text = "".join([r.delta or "" async for r in await llm.astream_chat(MESSAGES)])
    assert text == "You said: What is the capital of France?"
    assert server.requests[0]["stream_options"] == {"include_usage": True}
    [gen] = _generations(_view(langfuse_env))
    usage = _usage(server.requests[0])
    assert gen.usage == usage and usage["total"] == usage["input"] + usage["output"]
    assert gen.input == EXPECTED_INPUT
    assert gen.output == {"role": "assistant", "content": text}


async def test_streamed_generation_spans_the_http_exchange_and_has_time_to_first_token(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    with OpenAICompatServer(first_token_delay=0.3, chunk_delay=0.02) as server:
        stream = await _llm(server).astream_chat(MESSAGES)
        async for _ in stream:
            pass
        [(received, last_byte)] = server.exchanges
    [gen] = _generations(_view(langfuse_env))
    assert gen.start_time <= _at(received)
    assert gen.end_time >= _at(last_byte)  # ends when the stream is consumed, not when created
    assert (gen.end_time - gen.start_time).total_seconds() >= 0.3 + 0.02 * 8
    assert gen.completion_start_time is not None
    assert (gen.completion_start_time - _at(received)).total_seconds() >= 0.29  # the first chunk
    assert gen.completion_start_time < gen.end_time


async def test_a_stream_the_app_stops_reading_is_not_an_error(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    with OpenAICompatServer(first_token_delay=0.05, chunk_delay=0.05) as server:
        stream = await _llm(server).astream_chat(MESSAGES)
        async for _ in stream:
            break  # the user pressed "stop"
        await stream.aclose()
    [gen] = _generations(_view(langfuse_env))
    assert gen.level == "DEFAULT", gen.status_message
    assert gen.status_message == "stream closed by the consumer before its end"


async def test_server_without_stream_usage_gets_no_invented_usage(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    with OpenAICompatServer(honor_include_usage=False) as server:
        async for _ in await _llm(server).astream_chat(MESSAGES):
            pass
    [gen] = _generations(_view(langfuse_env))
    assert gen.usage == {}  # Langfuse will estimate it, from the readable messages below
    assert gen.input == EXPECTED_INPUT


async def test_stream_usage_setting_off_and_apps_own_stream_options_are_respected(
    langfuse_env: LangfuseReceiver, server: OpenAICompatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = _llm(server, additional_kwargs={"stream_options": {"include_usage": False}})
    otel_basic.configure()
    async for _ in await own.astream_chat(MESSAGES):
        pass
    assert server.requests[-1]["stream_options"] == {"include_usage": False}
    monkeypatch.setenv("OTEL_BASIC_STREAM_USAGE", "false")
    otel_basic.configure()
    async for _ in await _llm(server).astream_chat(MESSAGES):
        pass
    assert "stream_options" not in server.requests[-1]
    otel_basic.reset()  # and no telemetry: the request is the app's own, untouched
    async for _ in await _llm(server).astream_chat(MESSAGES):
        pass
    assert "stream_options" not in server.requests[-1]


async def test_tool_call_output_and_tool_result_input(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver, server: OpenAICompatServer
) -> None:
    from llama_index.core.tools import FunctionTool

    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    tool = FunctionTool.from_defaults(add)
    llm = _llm(server)
    first = await llm.achat_with_tools([tool], user_msg="add 2 and 40")
    [call] = llm.get_tool_calls_from_response(first, error_on_no_tool_call=True)
    history = [
        ChatMessage(role="user", content="add 2 and 40"),
        first.message,
        ChatMessage(
            role="tool", content=str(add(**call.tool_kwargs)), additional_kwargs={"tool_call_id": call.tool_id}
        ),
    ]
    await llm.achat_with_tools([tool], chat_history=history)
    view = _view(langfuse_env)
    gens = _generations(view)
    assert len(gens) == len(server.requests) == 2
    first_gen, second_gen = sorted(gens, key=lambda g: g.start_time)
    [tool_call] = first_gen.output["tool_calls"]
    assert tool_call["function"]["name"] == "add"
    assert tool_call["function"]["arguments"] == '{"a": 2, "b": 40}'
    assert second_gen.input[-1] == {"role": "tool", "content": "42", "tool_call_id": call.tool_id}
    assert second_gen.input[1]["tool_calls"][0]["id"] == call.tool_id
    helpers = [o for t in view.traces.values() for o in t.observations if o.name.startswith("OpenAI._prepare")]
    assert helpers and all(h.type != "GENERATION" and h.model is None and not h.usage for h in helpers)
    for gen, body in zip(sorted(gens, key=lambda g: g.start_time), server.requests, strict=True):
        assert gen.usage == _usage(body)


async def test_complete_input_is_the_prompt_stored_once(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    prompt = "### TASK: TRIAGE\nClassify.\n<email>\nFrom: Ada\nSubject: hi\n\nhow do I reset my password?\n</email>\n"
    await OfflineLLM().acomplete(prompt)
    [gen] = _generations(_view(langfuse_env))
    assert gen.input == prompt  # not {"args": [...]}
    assert "llm.prompts" not in gen.attributes
    assert gen.usage["input"] > 0


class _CompleteOnly(CustomLLM):
    """Implements only ``complete``: LlamaIndex's ``achat`` -> ``chat`` -> ``complete`` chain."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="complete-only-1")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(
            text="ok", raw={"usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}}
        )

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Iterator[CompletionResponse]:
        yield self.complete(prompt)


async def test_a_call_delegating_to_another_is_one_generation(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    await _CompleteOnly().achat(MESSAGES)
    view = _view(langfuse_env)
    [gen] = _generations(view)
    assert gen.usage == {"input": 7, "output": 1, "total": 8}  # counted once, not three times
    names = sorted(o.name for t in view.traces.values() for o in t.observations)
    assert len(names) == 3, names  # achat and chat are still there, as spans


async def test_openinference_hide_inputs_still_hides_the_rebuilt_input(
    langfuse_env: LangfuseReceiver, server: OpenAICompatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENINFERENCE_HIDE_INPUTS", "true")
    monkeypatch.setenv("OPENINFERENCE_HIDE_OUTPUT_MESSAGES", "true")
    otel_basic.configure()
    await _llm(server).achat(MESSAGES)
    [gen] = _generations(_view(langfuse_env))
    assert "France" not in str(gen.input)
    assert "France" not in str(gen.attributes)
    assert gen.usage == _usage(server.requests[0])


class _ResponsesLike(CustomLLM):
    """Streams like llama-index's ``OpenAIResponses``: usage only in ``additional_kwargs["usage"]``."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4.1-mini", is_chat_model=True)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        raise NotImplementedError

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Iterator[CompletionResponse]:
        raise NotImplementedError

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        async def gen() -> ChatResponseAsyncGen:
            yield ChatResponse(message=ChatMessage(role="assistant", content="Pa"), delta="Pa", raw={"type": "delta"})
            usage = SimpleNamespace(input_tokens=11, output_tokens=3, total_tokens=14)
            yield ChatResponse(
                message=ChatMessage(role="assistant", content="Paris"),
                delta="ris",
                raw={"type": "response.completed"},
                additional_kwargs={"usage": usage},
            )

        return gen()


async def test_usage_streamed_in_additional_kwargs_is_read(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    async for _ in await _ResponsesLike().astream_chat(MESSAGES):
        pass
    [gen] = _generations(_view(langfuse_env))
    assert gen.usage == {"input": 11, "output": 3, "total": 14}
    assert gen.output == {"role": "assistant", "content": "Paris"}


def _random_history(rng: random.Random) -> tuple[list[ChatMessage], list[dict[str, Any]]]:
    """A random conversation, and how Langfuse must show it (OpenAI's message format)."""
    words = ["alpha", "Zürich", "naïve", "東京", "tool", "output", "{not json", 'quote"s', "line\nbreak", "émoji 🎉"]

    def text() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))

    messages = [ChatMessage(role="system", content=text())]
    expected: list[dict[str, Any]] = [{"role": "system", "content": messages[0].content}]
    for turn in range(rng.randint(1, 4)):
        user = text()
        messages.append(ChatMessage(role="user", content=user))
        expected.append({"role": "user", "content": user})
        if rng.random() < 0.6:
            calls = [
                {
                    "id": f"call_{turn}_{i}",
                    "type": "function",
                    "function": {"name": rng.choice(["add", "lookup"]), "arguments": json.dumps({"q": text()})},
                }
                for i in range(rng.randint(1, 2))
            ]
            messages.append(ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": calls}))
            expected.append({"role": "assistant", "content": "", "tool_calls": calls})
            for call in calls:
                result = text()
                messages.append(
                    ChatMessage(role="tool", content=result, additional_kwargs={"tool_call_id": call["id"]})
                )
                expected.append({"role": "tool", "content": result, "tool_call_id": call["id"]})
        else:
            answer = text()
            messages.append(ChatMessage(role="assistant", content=answer))
            expected.append({"role": "assistant", "content": answer})
    messages.append(ChatMessage(role="user", content="and now?"))
    expected.append({"role": "user", "content": "and now?"})
    return messages, expected


async def test_random_conversations_arrive_as_the_messages_sent(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver, server: OpenAICompatServer
) -> None:
    rng = random.Random(16)
    cases = [_random_history(rng) for _ in range(12)]
    llm = _llm(server)
    for i, (history, _) in enumerate(cases):
        if i % 2:
            async for _ in await llm.astream_chat(history):
                pass
        else:
            await llm.achat(history)
    gens = sorted(_generations(_view(langfuse_env)), key=lambda g: g.start_time)
    assert len(gens) == len(cases) == len(server.requests)
    for gen, (_, expected), body in zip(gens, cases, server.requests, strict=True):
        assert gen.input == expected
        assert gen.usage == _usage(body)


async def test_a_wrapper_span_is_not_a_generation_and_has_no_prompt_copy(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver, server: OpenAICompatServer
) -> None:
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(model="gpt-4o-mini", api_key="sk-test", api_base=server.base_url, is_chat_model=True)
    await llm.acomplete("Say hi")  # OpenAILike.acomplete -> OpenAI.acomplete
    view = _view(langfuse_env)
    observations = [o for t in view.traces.values() for o in t.observations]
    [gen] = [o for o in observations if o.type == "GENERATION"]
    [wrapper] = [o for o in observations if o.type != "GENERATION"]
    assert gen.input == "Say hi"
    assert gen.usage == _usage(server.requests[0]) and not wrapper.usage and wrapper.model is None
    assert "llm.prompts" not in gen.attributes and "llm.prompts" not in wrapper.attributes
