"""The base of our LlamaIndex span handlers: they watch OpenInference's spans, they make none.

LlamaIndex's ``BaseSpanHandler`` asks every handler to create, exit and drop spans of its own type;
ours (clean run input/output, per-step flush, the server's run-span observer) only react to
``span_enter``/``span_exit``/``span_drop``, so the span-making hooks are no-ops, written once here.
"""

from __future__ import annotations

from typing import Any

from llama_index_instrumentation.span.base import BaseSpan
from llama_index_instrumentation.span_handlers.base import BaseSpanHandler


class ObservingSpanHandler(BaseSpanHandler[BaseSpan]):
    def new_span(self, *args: Any, **kwargs: Any) -> None:
        return None

    def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> None:
        return None

    def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> None:
        return None
