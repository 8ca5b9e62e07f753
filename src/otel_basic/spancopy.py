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

__all__ = ["AttributeMap", "copy_event", "copy_span", "transform_span"]

AttributeMap = Mapping[str, AnyValue]


class _CopiedEvent(Event):
    """An ``Event`` that remembers how many attributes the original had dropped."""

    def __init__(self, original: Event, attributes: AttributeMap | None) -> None:
        super().__init__(original.name, attributes, original.timestamp)
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
    ) -> None:
        super().__init__(
            name=original.name,
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


def copy_event(event: Event, attributes: AttributeMap | None) -> Event:
    """The same event (name, timestamp, dropped count) with other attributes."""
    return _CopiedEvent(event, attributes)


def copy_span(
    span: ReadableSpan,
    *,
    attributes: AttributeMap | None,
    events: Sequence[Event] | None = None,
    links: Sequence[Link] | None = None,
    status: Status | None = None,
) -> ReadableSpan:
    """The same span with other attributes (and optionally events, links, status); ``None`` keeps them."""
    return _CopiedSpan(
        span,
        attributes,
        tuple(span.events) if events is None else events,
        tuple(span.links) if links is None else links,
        span.status if status is None else status,
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
    """Apply attribute rewriters to a span and its events/links; returns ``span`` itself if none changed."""
    new_attrs = span_attrs(span.attributes) if span.attributes else None
    changed = new_attrs is not None

    events: list[Event] = []
    for event in span.events:
        new_ev = event_attrs(event.name, event.attributes) if event.attributes else None
        if new_ev is not None:
            changed = True
            events.append(copy_event(event, new_ev))
        else:
            events.append(event)

    links: list[Link] = []
    for link in span.links:
        new_link = link_attrs(link.attributes) if link_attrs and link.attributes else None
        if new_link is not None:
            changed = True
            links.append(Link(link.context, new_link))
        else:
            links.append(link)

    status = span.status
    if status_description and status.description:
        new_desc = status_description(status.description)
        if new_desc is not None:
            changed = True
            status = Status(status.status_code, new_desc)

    if not changed:
        return span
    return copy_span(
        span,
        attributes=span.attributes if new_attrs is None else new_attrs,
        events=events,
        links=links,
        status=status,
    )
