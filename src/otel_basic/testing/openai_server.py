"""A local OpenAI-compatible chat server: a stand-in for the network peer of an agent.

Why: the traces that matter most (an agent on a chat model, streaming, with tools) can only be
checked end to end against a server that speaks the real wire format: ``/v1/chat/completions``
with and without streaming (server-sent events), ``stream_options.include_usage``, tool calls
split over several chunks, and usage numbers of a realistic size. This server is deterministic,
listens on 127.0.0.1 only, records every request, and can be slowed down (time to first token,
time between chunks) so that timing can be asserted.

The "model":

* tools offered and no tool result since the last user message: it calls the tool whose name
  appears in the user's message (else the first tool), with arguments read from the message
  (integers in order for numeric parameters, the message text for string parameters);
* the last message is a tool result: it answers with a sentence that carries the result;
* otherwise it answers ``"You said: <last user message>"``.

Usage is counted as about four characters per token, like OpenAI's tokenizers on English text.

Run it by hand: ``python -m otel_basic.testing.openai_server --port 8808``, then
``OPENAI_BASE_URL=http://127.0.0.1:8808/v1 OPENAI_API_KEY=local``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["OpenAICompatServer", "Reply", "answer", "count_tokens", "usage_for"]

DEFAULT_MODEL = "gpt-4o-mini"


def count_tokens(text: str) -> int:
    """About four characters per token (OpenAI's rule of thumb for English)."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


@dataclass
class Reply:
    """What the model answers: text, or tool calls (name, JSON arguments)."""

    content: str = ""
    tool_calls: list[tuple[str, str]] = field(default_factory=list)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _arguments(schema: dict[str, Any], text: str) -> dict[str, Any]:
    props = schema.get("properties") or {}
    numbers = [int(n) for n in re.findall(r"-?\d+", text)]
    args: dict[str, Any] = {}
    for name, spec in props.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind in ("integer", "number"):
            args[name] = numbers.pop(0) if numbers else 1
        elif kind == "boolean":
            args[name] = True
        else:
            args[name] = text
    return args


def answer(body: dict[str, Any]) -> Reply:
    """The deterministic model: what it replies to a chat completion request."""
    messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
    last = messages[-1] if messages else {}
    users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
    last_user = users[-1] if users else ""
    if last.get("role") == "tool":
        return Reply(content=f"The tool says: {_text(last.get('content'))}.")
    tools = [t.get("function", {}) for t in body.get("tools") or [] if isinstance(t, dict)]
    if tools and last.get("role") == "user":
        chosen = next((t for t in tools if t.get("name") and t["name"] in last_user), tools[0])
        args = _arguments(chosen.get("parameters") or {}, last_user)
        return Reply(tool_calls=[(str(chosen.get("name")), json.dumps(args))])
    return Reply(content=f"You said: {last_user}")


def _prompt_tokens(body: dict[str, Any]) -> int:
    tokens = 3
    for message in body.get("messages", []):
        if isinstance(message, dict):
            tokens += 4 + count_tokens(_text(message.get("content")))
            for call in message.get("tool_calls") or []:
                tokens += count_tokens(json.dumps(call))
    if body.get("tools"):
        tokens += count_tokens(json.dumps(body["tools"]))
    return tokens


def _usage(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    prompt = _prompt_tokens(body)
    completion = count_tokens(reply.content) + sum(count_tokens(n + a) + 3 for n, a in reply.tool_calls)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def usage_for(body: dict[str, Any]) -> dict[str, Any]:
    """The usage the server reports for a request body (what a test expects in Langfuse)."""
    return _usage(body, answer(body))


class OpenAICompatServer:
    """``/v1/chat/completions`` (plain and SSE streaming) and ``/v1/models`` on 127.0.0.1.

    ``first_token_delay`` / ``chunk_delay`` (seconds) slow the answer down; with
    ``honor_include_usage=False`` the server ignores ``stream_options.include_usage``, like
    servers that never send usage in streams. ``responder`` replaces the built-in model (a
    function from the request body to a :class:`Reply`). ``requests`` holds every request body
    received, ``exchanges`` each request's (received, last bytes about to be sent) times.
    """

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        port: int = 0,
        first_token_delay: float = 0.0,
        chunk_delay: float = 0.0,
        honor_include_usage: bool = True,
        responder: Callable[[dict[str, Any]], Reply] | None = None,
    ) -> None:
        self.model = model
        self.responder = responder or answer
        self.first_token_delay = first_token_delay
        self.chunk_delay = chunk_delay
        self.honor_include_usage = honor_include_usage
        self.requests: list[dict[str, Any]] = []
        self.exchanges: list[tuple[float, float]] = []  # (request received, last byte sent), time.time()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The ``OPENAI_BASE_URL`` / ``api_base`` value, ending in ``/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAICompatServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="openai-compat", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> OpenAICompatServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- the wire format ---------------------------------------------------------------------

    def _exchanged(self, received: float) -> None:
        # Recorded just before the last bytes go out: the client cannot finish reading earlier,
        # and a test that reads ``exchanges`` after its call returns always finds the entry.
        with self._lock:
            self.exchanges.append((received, time.time()))

    def usage(self, body: dict[str, Any]) -> dict[str, Any]:
        """The usage this server reported for ``body``."""
        return _usage(body, self.responder(body))

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {"id": f"call_{i}_{uuid.uuid4().hex[:8]}", "type": "function", "function": {"name": n, "arguments": a}}
                for i, (n, a) in enumerate(reply.tool_calls)
            ]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model") or self.model),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                    "logprobs": None,
                }
            ],
            "usage": _usage(body, reply),
        }

    def _chunks(self, body: dict[str, Any], reply: Reply) -> Iterator[dict[str, Any]]:
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": str(body.get("model") or self.model),
        }
        with_usage = bool((body.get("stream_options") or {}).get("include_usage")) and self.honor_include_usage

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            out = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
            if with_usage:
                out["usage"] = None
            return out

        yield chunk({"role": "assistant", "content": ""})
        if reply.content:
            words = reply.content.split(" ")
            for i, word in enumerate(words):
                yield chunk({"content": word if i == 0 else " " + word})
        for i, (name, arguments) in enumerate(reply.tool_calls):
            call_id = f"call_{i}_{uuid.uuid4().hex[:8]}"
            yield chunk(
                {
                    "tool_calls": [
                        {"index": i, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
                    ]
                }
            )
            half = len(arguments) // 2
            for part in (arguments[:half], arguments[half:]):
                yield chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
        yield chunk({}, "tool_calls" if reply.tool_calls else "stop")
        if with_usage:
            yield {**base, "choices": [], "usage": _usage(body, reply)}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _json(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                received = time.time()
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._json(400, {"error": {"message": "body is not JSON"}})
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                with server._lock:
                    server.requests.append(body)
                reply = server.responder(body)
                if not body.get("stream"):
                    time.sleep(server.first_token_delay)
                    payload = server._completion(body, reply)
                    server._exchanged(received)
                    self._json(200, payload)
                else:
                    self._stream(body, reply, received)

            def _stream(self, body: dict[str, Any], reply: Reply, received: float) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                time.sleep(server.first_token_delay)
                try:
                    for i, payload in enumerate(server._chunks(body, reply)):
                        if i and server.chunk_delay:
                            time.sleep(server.chunk_delay)
                        self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                        self.wfile.flush()
                    server._exchanged(received)
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client stopped reading the stream: as a real server, just stop

        return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8808)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--first-token-delay", type=float, default=0.2, help="seconds before the first chunk")
    parser.add_argument("--chunk-delay", type=float, default=0.02, help="seconds between chunks")
    args = parser.parse_args(argv)
    server = OpenAICompatServer(
        model=args.model, port=args.port, first_token_delay=args.first_token_delay, chunk_delay=args.chunk_delay
    )
    print(f"OpenAI-compatible server on {server.base_url} (model {server.model}); Ctrl-C stops it", flush=True)
    try:
        server._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._server.server_close()


if __name__ == "__main__":
    main()
