"""Per-step flushing and run helpers for LlamaIndex Workflows (stub: being written)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def flush_after_step(func: F) -> F:
    """Decorate a workflow step (under ``@step``) so its spans are flushed when it ends."""

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await func(*args, **kwargs)
        finally:
            pass

    return wrapper  # type: ignore[return-value]
