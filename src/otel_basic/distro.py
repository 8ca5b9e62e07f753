"""Zero-code setup: ``opentelemetry-instrument python app.py`` with otel-basic's pipeline.

``opentelemetry-instrument`` (package ``opentelemetry-instrumentation``) runs, before the app:
the distro's ``configure()`` (entry point group ``opentelemetry_distro``), then ONE configurator
(group ``opentelemetry_configurator``, chosen by ``OTEL_PYTHON_CONFIGURATOR`` when several are
installed), then every instrumentor (group ``opentelemetry_instrumentor``) through the distro's
``load_instrumentor``. otel-basic provides both entry points, named ``otel_basic``:

- :class:`OtelBasicConfigurator` calls :func:`otel_basic.configure`: the same pipeline, Langfuse
  route, masking, per-step flush support and exit flush (atexit and signals) as in code.
- :class:`OtelBasicDistro` skips OpenInference's LlamaIndex instrumentor entry point when
  otel-basic is enabled, because ``configure()`` has already instrumented LlamaIndex on its own
  provider (with its fast path): LlamaIndex is instrumented once. Every other instrumentor
  (requests, httpx, ...) loads as usual and sends through the global provider, which forwards to
  otel-basic's pipeline.

Usage::

    OTEL_PYTHON_CONFIGURATOR=otel_basic opentelemetry-instrument python app.py

(``OTEL_PYTHON_DISTRO=otel_basic`` picks the distro when another distro is installed too.)
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.util._importlib_metadata import EntryPoint

import otel_basic
from otel_basic import runtime

_log = logging.getLogger("otel_basic")

#: Instrumentor entry points otel-basic installs itself (``configure()``), by entry point name.
OWN_INSTRUMENTORS = frozenset({"llama_index", "llama-index"})


class OtelBasicConfigurator:
    """The ``opentelemetry_configurator`` entry point: configure otel-basic from the environment."""

    def configure(self, **kwargs: Any) -> None:
        otel_basic.configure()  # never raises for bad configuration: one warning, app untraced


class OtelBasicDistro(BaseDistro):  # type: ignore[misc]  # the base class is untyped
    """The ``opentelemetry_distro`` entry point: LlamaIndex instrumented once (by otel-basic)."""

    def _configure(self, **kwargs: Any) -> None:
        pass  # the configurator does the work; a distro runs even without OTEL_PYTHON_CONFIGURATOR

    def load_instrumentor(self, entry_point: EntryPoint, **kwargs: Any) -> None:
        telemetry = runtime.current()
        if entry_point.name in OWN_INSTRUMENTORS and telemetry is not None and telemetry.enabled:
            _log.debug("otel-basic: %s is instrumented by otel-basic itself", entry_point.name)
            return
        super().load_instrumentor(entry_point, **kwargs)
