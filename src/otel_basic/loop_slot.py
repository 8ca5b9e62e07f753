"""A value per event loop, kept on the loop object itself.

Why not a table of ours keyed by loop: the values (a pending timer, a batch out, a connection's
transport) hold their loop, so such a table kept every loop ever used alive (one loop and one socket
leaked per ``asyncio.run``). On the loop, they go when the loop goes.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_names = itertools.count()


class LoopSlot(Generic[T]):
    """One attribute on each loop, under a name of its own (a fork child's new slot does not see the
    parent's values, which stay on the loops under the old name and go with them)."""

    def __init__(self, kind: type[T]) -> None:
        self._kind = kind
        self._attr = f"_otel_basic_{kind.__name__.strip('_').lower()}_{next(_names)}"

    def get(self, loop: asyncio.AbstractEventLoop) -> T | None:
        value = getattr(loop, self._attr, None)
        return value if isinstance(value, self._kind) else None

    def setdefault(self, loop: asyncio.AbstractEventLoop, make: Callable[[], T]) -> tuple[T | None, bool]:
        """This loop's value, made if it had none: ``(value, made)``; ``(None, False)`` for a loop
        that takes no attributes (no ``__dict__``)."""
        value = self.get(loop)
        if value is not None:
            return value, False
        value = make()
        try:
            setattr(loop, self._attr, value)
        except AttributeError:
            return None, False
        return value, True
