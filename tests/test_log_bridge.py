"""Logging through otel-basic, asserted on what Langfuse shows (the view), over real HTTP.

Warnings and errors must be visible in Langfuse (level, message, logger, location, stack trace),
and installing telemetry must change nothing the host's own logging prints.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from workflows import Context, Workflow, step
from workflows.events import StartEvent, StopEvent

import otel_basic
from otel_basic import log_bridge
from otel_basic.testing import LangfuseReceiver
from otel_basic.testing.langfuse_view import LangfuseView, langfuse_view
from tests.conftest import subprocess_env

app_log = logging.getLogger("tests.app")


@pytest.fixture
def app_logger_at_info() -> Iterator[logging.Logger]:
    """The application enables INFO on its own logger (otel-basic never lowers levels)."""
    before = app_log.level
    app_log.setLevel(logging.INFO)
    yield app_log
    app_log.setLevel(before)


def shown(receiver: LangfuseReceiver) -> LangfuseView:
    report = otel_basic.flush(timeout=10)
    assert report, report.summary()
    return langfuse_view(receiver.spans, scores=receiver.scores)


def test_error_outside_any_span_is_a_useful_trace(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    config: dict[str, str] = {}
    try:
        config["missing"]
    except KeyError:
        app_log.exception("could not load config for %s", "tenant-7")
    trace = shown(langfuse_env).trace("log.ERROR")
    assert trace.tags == ["log"]
    assert trace.output == "could not load config for tenant-7"
    assert trace.input["logger"] == "tests.app"
    assert trace.input["location"].rsplit(":", 1)[0].endswith("test_log_bridge.py")
    assert trace.input["function"] == "test_error_outside_any_span_is_a_useful_trace"
    obs = trace.observation("log.ERROR")
    assert (obs.level, obs.status_message) == ("ERROR", "could not load config for tenant-7")
    assert obs.metadata["log.logger"] == "tests.app"
    assert "KeyError: 'missing'" in obs.metadata["log.stacktrace"]
    assert "Traceback (most recent call last)" in obs.metadata["log.stacktrace"]


def test_warning_outside_any_span_is_not_a_trace_by_default(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    app_log.warning("disk at 91%%")
    with otel_basic.get_tracer("tests").start_as_current_span("marker"):
        pass
    view = shown(langfuse_env)
    assert [t.name for t in view.traces.values()] == ["marker"]


def test_warning_outside_any_span_opt_in(langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the bridge's trace level at WARNING, a warning is its own trace, level WARNING."""
    monkeypatch.setenv("OTEL_BASIC_LOG_LEVEL", "off")  # only the bridge installed below
    tel = otel_basic.configure()
    assert tel.enabled
    handler = log_bridge.install(otel_basic.get_tracer("otel_basic.logging"), logging.INFO, trace_level=logging.WARNING)
    try:
        app_log.warning("disk at %d%%", 91)
    finally:
        log_bridge.uninstall(handler)
    trace = shown(langfuse_env).trace("log.WARNING")
    obs = trace.observation("log.WARNING")
    assert (obs.level, obs.status_message) == ("WARNING", "disk at 91%")
    assert trace.output == "disk at 91%" and trace.level == "WARNING"
    assert obs.metadata["log.level"] == "WARNING" and "log.stacktrace" not in obs.metadata


def test_warning_outside_any_span_opt_in_by_setting(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BASIC_LOG_TRACE_LEVEL", "warning")
    assert otel_basic.configure().enabled
    app_log.warning("queue is %s", "slow")
    assert shown(langfuse_env).trace("log.WARNING").output == "queue is slow"


def test_warning_then_error_inside_a_span_raise_its_level_and_never_lower_it(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver, app_logger_at_info: logging.Logger
) -> None:
    tracer = otel_basic.get_tracer("tests")
    with tracer.start_as_current_span("charge"):
        app_log.info("starting")
        app_log.warning("retrying payment (%d)", 1)
        app_log.warning("retrying payment (%d)", 2)  # same level: the first message stays
        try:
            raise TimeoutError("gateway timed out")
        except TimeoutError:
            app_log.exception("payment failed for order %s", "o-1")
        app_log.warning("giving up")  # lower than ERROR: changes nothing
        app_log.info("done")
    with tracer.start_as_current_span("quiet"):
        app_log.info("all good")
    view = shown(langfuse_env)
    charge = view.trace("charge").observation("charge")
    assert (charge.level, charge.status_message) == ("ERROR", "payment failed for order o-1")
    assert charge.metadata["log.logger"] == "tests.app"
    assert "TimeoutError: gateway timed out" in charge.metadata["log.stacktrace"]
    assert charge.metadata["log.function"] == "test_warning_then_error_inside_a_span_raise_its_level_and_never_lower_it"
    quiet = view.trace("quiet").observation("quiet")
    assert (quiet.level, quiet.status_message) == ("DEFAULT", None)
    assert "log.logger" not in quiet.metadata
    assert [t.name for t in view.traces.values() if t.name and t.name.startswith("log.")] == []


def test_first_warning_inside_a_span_is_shown(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    with otel_basic.get_tracer("tests").start_as_current_span("lookup"):
        app_log.warning("cache miss for %s", "k1")
        app_log.warning("cache miss for %s", "k2")
    obs = shown(langfuse_env).trace("lookup").observation("lookup")
    assert (obs.level, obs.status_message) == ("WARNING", "cache miss for k1")


class StepLogsAHandledError(Workflow):
    @step
    async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
        try:
            raise ConnectionError("CRM unreachable")
        except ConnectionError:
            app_log.error("CRM lookup failed, continuing without history", exc_info=True)
        return StopEvent(result="ok")


async def test_handled_error_logged_inside_a_workflow_step(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    assert await otel_basic.run_with_flush(StepLogsAHandledError(timeout=10)) == "ok"
    trace = shown(langfuse_env).trace("StepLogsAHandledError")
    step_obs = trace.observation("StepLogsAHandledError.work")
    assert (step_obs.level, step_obs.status_message) == ("ERROR", "CRM lookup failed, continuing without history")
    assert "ConnectionError: CRM unreachable" in step_obs.metadata["log.stacktrace"]
    assert trace.root is not None and trace.root.level == "DEFAULT"  # handled: the run itself succeeded
    assert trace.level == "ERROR"  # but the trace list's error filter finds it
    assert trace.output == "ok"


def test_installing_changes_nothing_in_host_logging(langfuse_env: LangfuseReceiver) -> None:
    root = logging.getLogger()
    before = (root.level, list(root.handlers), [h.level for h in root.handlers], app_log.level)
    assert otel_basic.configure().enabled
    assert (root.level, list(root.handlers), [h.level for h in root.handlers], app_log.level) == before
    otel_basic.reset()
    assert logging.getLogRecordFactory() is logging.LogRecord  # uninstalled cleanly


def test_host_output_unchanged_in_a_real_process(langfuse_env: LangfuseReceiver) -> None:
    """Python's last-resort output still prints, and a later basicConfig() still takes effect."""
    code = textwrap.dedent(
        """
        import logging, otel_basic
        assert otel_basic.configure().enabled
        logging.getLogger("host").warning("before basicConfig")
        logging.basicConfig(level=logging.INFO, format="HOST %(levelname)s %(message)s")
        logging.getLogger("host").info("after basicConfig")
        print("report", bool(otel_basic.flush(timeout=10)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "before basicConfig" in lines  # the last-resort handler's bare format
    assert "HOST INFO after basicConfig" in lines
    assert "report True" in done.stdout


@pytest.mark.parametrize(
    ("raw", "expected"), [("warning", logging.WARNING), ("ERROR", logging.ERROR), ("off", None), ("debug", 10)]
)
def test_log_trace_level_setting(raw: str, expected: int | None) -> None:
    assert otel_basic.load_settings({"OTEL_BASIC_LOG_TRACE_LEVEL": raw}).log_trace_level == expected


def test_log_trace_level_default_and_bad_value(caplog: pytest.LogCaptureFixture) -> None:
    assert otel_basic.load_settings({}).log_trace_level == logging.ERROR
    with caplog.at_level(logging.WARNING, logger="otel_basic"):  # a bad value: one warning, the default
        assert otel_basic.load_settings({"OTEL_BASIC_LOG_TRACE_LEVEL": "loud"}).log_trace_level == logging.ERROR
    assert any("OTEL_BASIC_LOG_TRACE_LEVEL" in r.getMessage() for r in caplog.records)
