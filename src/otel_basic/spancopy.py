"""Copy a finished span with new attributes/events, for exporter wrappers that rewrite data.

Finished SDK spans are shared with every other span processor, so a wrapper must never mutate them: it
exports a copy. The copies keep the original ``dropped_*`` counts (a plain ``ReadableSpan`` built from a
``dict`` would report 0), so the OTLP payload still says how much the SDK limits cut off.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, Status
from opentelemetry.util.types import AnyValue

__all__ = ["AttributeMap", "attributes_of", "copy_event", "copy_span", "plain", "transform_span"]

AttributeMap = Mapping[str, AnyValue]


def plain(attrs: AttributeMap) -> AttributeMap:
    """The plain dict behind the SDK's ``BoundedAttributes``, when there is one.

    Why: ``BoundedAttributes`` iterates in Python (a generator and a ``__getitem__`` call per key), which
    costs ~0.2 µs per attribute, more than checking the attribute. A finished span's attributes no longer
    change, so reading the dict directly is safe; anything else is returned as it is.
    """
    inner = getattr(attrs, "_dict", None)
    return inner if inner.__class__ is dict else attrs


def attributes_of(span: ReadableSpan) -> AttributeMap | None:
    """A span's attributes as cheaply iterable as possible (see :func:`plain`)."""
    raw = getattr(span, "_attributes", None)
    if raw is None:
        return span.attributes
    return plain(raw)


class _CopiedEvent(Event):
    """An ``Event`` that remembers how many attributes the original had dropped."""

    def __init__(self, original: Event, attributes: AttributeMap | None, name: str | None = None) -> None:
        super().__init__(original.name if name is None else name, attributes, original.timestamp)
        self._dropped = original.dropped_attributes

    @property
    def dropped_attributes(self) -> int:
        return self._dropped


class _CopiedSpan(ReadableSpan):
    """A ``ReadableSpan`` that keeps the original's dropped attribute/event/link counts."""

    def __init__(
        self,
        original: ReadableSpan,
        attributes: AttributeMap | None,
        events: Sequence[Event],
        links: Sequence[Link],
        status: Status,
        name: str | None = None,
    ) -> None:
        super().__init__(
            name=original.name if name is None else name,
            context=original.context,
            parent=original.parent,
            resource=original.resource,
            attributes=attributes,
            events=events,
            links=links,
            kind=original.kind,
            status=status,
            start_time=original.start_time,
            end_time=original.end_time,
            instrumentation_scope=original.instrumentation_scope,
        )
        self._dropped_counts = (original.dropped_attributes, original.dropped_events, original.dropped_links)

    @property
    def dropped_attributes(self) -> int:
        return self._dropped_counts[0]

    @property
    def dropped_events(self) -> int:
        return self._dropped_counts[1]

    @property
    def dropped_links(self) -> int:
        return self._dropped_counts[2]


def copy_event(event: Event, attributes: AttributeMap | None, name: str | None = None) -> Event:
    """The same event (timestamp, dropped count) with other attributes (and name, unless ``None``)."""
    return _CopiedEvent(event, attributes, name)


def copy_span(
    span: ReadableSpan,
    *,
    attributes: AttributeMap | None,
    events: Sequence[Event] | None = None,
    links: Sequence[Link] | None = None,
    status: Status | None = None,
    name: str | None = None,
) -> ReadableSpan:
    """The same span with other attributes (and optionally events, links, status, name); ``None`` keeps
    them."""
    return _CopiedSpan(
        span,
        attributes,
        tuple(span.events) if events is None else events,
        tuple(span.links) if links is None else links,
        span.status if status is None else status,
        name,
    )


AttrFn = Callable[[AttributeMap], "AttributeMap | None"]
"""Rewrites an attribute mapping; returns ``None`` when nothing needs to change (no copy is made)."""


def transform_span(
    span: ReadableSpan,
    span_attrs: AttrFn,
    event_attrs: Callable[[str, AttributeMap], AttributeMap | None],
    link_attrs: AttrFn | None = None,
    status_description: Callable[[str], str | None] | None = None,
) -> ReadableSpan:
    """Apply attribute rewriters to a span and its events/links; returns ``span`` itself if none changed.

    Runs for every exported span, so the common case (no events, no links, nothing to change) only
    touches the span's storage: ``span.events``/``span.links`` would copy them into tuples each time.
    """
    attributes = attributes_of(span)
    new_attrs = span_attrs(attributes) if attributes else None
    changed = new_attrs is not None

    raw_events = getattr(span, "_events", None)
    events: Sequence[Event] = span.events if raw_events is None or raw_events else ()
    new_events: list[Event] | None = None
    for i, event in enumerate(events):
        new_ev = event_attrs(event.name, plain(event.attributes)) if event.attributes else None
        if new_ev is not None:
            if new_events is None:
                new_events = list(events)
            new_events[i] = copy_event(event, new_ev)

    raw_links = getattr(span, "_links", None)
    links: Sequence[Link] = span.links if link_attrs and (raw_links is None or raw_links) else ()
    new_links: list[Link] | None = None
    for i, link in enumerate(links):
        new_link = link_attrs(link.attributes) if link_attrs and link.attributes else None
        if new_link is not None:
            if new_links is None:
                new_links = list(links)
            new_links[i] = Link(link.context, new_link)

    status = span.status
    if status_description and status.description:
        new_desc = status_description(status.description)
        if new_desc is not None:
            changed = True
            status = Status(status.status_code, new_desc)

    if not changed and new_events is None and new_links is None:
        return span
    return copy_span(
        span,
        attributes=attributes if new_attrs is None else new_attrs,
        events=new_events,
        links=new_links,
        status=status,
    )
