"""The ``otel-basic`` command: ``doctor``, ``replay`` and ``collector`` (the ``[cli]`` extra).

Each command is a thin wrapper: the work lives in :mod:`otel_basic.doctor`, :mod:`otel_basic.spool`
and :mod:`otel_basic.collector`, imported when the command runs so that ``--help`` starts fast.
The example app's demo is the app's own entry point (``python -m basic.demo``, ``scripts/demo.sh``):
the reusable layer never imports the app. The console script enters through
:mod:`otel_basic.console`, which explains a missing ``[cli]`` extra in one line.
"""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from otel_basic.settings import ConfigError, load_settings, redact_urls_in


class _InOrder(click.Group):
    """Lists commands in the order a newcomer needs them (doctor first), not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=_InOrder, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """otel-basic: LlamaIndex Workflow traces that arrive in Langfuse, every time.

    When traces are missing, run `otel-basic doctor`.
    """


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Per-check timeout, seconds.",
)
def doctor(as_json: bool, timeout: float) -> None:
    """Check the tracing setup step by step and print `healthy` or the exact fix.

    Exit code 0 when healthy, 1 otherwise.
    """
    from otel_basic.doctor import render, run_doctor

    report = run_doctor(timeout=timeout)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, default=str))
    else:
        render(report, Console())
        click.echo(report.line)  # one plain line, never wrapped
    sys.exit(0 if report.healthy else 1)


@main.command()
@click.option("--rejected", is_flag=True, help="First move rejected batches back (after fixing the cause).")
def replay(rejected: bool) -> None:
    """Send the spool for the configured destination, oldest first.

    Exit code 0 when nothing remains in the spool, 1 otherwise.
    """
    from otel_basic.pipeline import build_road

    console = Console()
    try:
        settings = load_settings()
    except ConfigError as exc:
        console.print(Text(f"configuration error: {redact_urls_in(str(exc))}", style="bold red"))
        sys.exit(2)
    if settings.route in ("disabled", "file"):
        why = "the file route has no spool" if settings.route == "file" else settings.reason
        console.print(Text(f"nothing to replay to: {why}", style="yellow"))
        console.print(
            "The spool is kept per destination: set the same LANGFUSE_* / OTEL_EXPORTER_OTLP_* "
            "variables as the application that spooled.",
            highlight=False,
        )
        sys.exit(1)
    road = build_road(settings)
    spool = road.spool
    if spool is None:
        console.print(Text("the spool is off (OTEL_BASIC_SPOOL_DIR=off): nothing to replay", style="yellow"))
        sys.exit(0)
    spool.recover_claims()
    requeued = spool.requeue_rejected() if rejected else 0
    state = spool.state()
    console.print(Text.assemble(("destination: ", "bold"), settings.reason))
    console.print(Text.assemble(("spool: ", "bold"), str(spool.dir)))
    if requeued:
        console.print(f"moved {requeued} rejected spans back for another try", highlight=False)
    if not state.batches:
        console.print("nothing to replay: the spool is empty", highlight=False)
        _rejected_note(console, state.rejected_spans)
        sys.exit(0)

    try:
        with Progress(
            TextColumn("replaying"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("batches"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("replay", total=state.batches)

            def advance(_delivered: int) -> None:
                progress.update(task, completed=state.batches - spool.state().batches)

            result = road.replay(progress=advance)
    finally:
        road.close()
    after = spool.state()

    table = Table(title="replay", title_justify="left", show_header=False, show_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("sent", _n(result.delivered, "span"))
    table.add_row("rejected", f"{_n(result.rejected, 'span')} (kept aside with the reason)")
    if result.dropped:
        table.add_row("dropped", _n(result.dropped, "span"))
    table.add_row("remaining", f"{_n(after.batches, 'batch')}, {_n(after.spans, 'span')}")
    console.print(table)
    if after.batches and result.reason:
        console.print(Text(f"stopped: {redact_urls_in(result.reason)}; run `otel-basic doctor`", style="red"))
    if result.rejected:
        console.print(Text("rejected batches are kept aside: `otel-basic doctor` shows why", style="red"))
    else:
        _rejected_note(console, after.rejected_spans)
    sys.exit(0 if after.batches == 0 and result.rejected == 0 else 1)


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else ('es' if word.endswith('ch') else 's')}"


def _rejected_note(console: Console, rejected_spans: int) -> None:
    if rejected_spans:
        console.print(
            Text(
                f"{rejected_spans} spans rejected earlier are kept aside: fix the cause "
                "(`otel-basic doctor`), then `otel-basic replay --rejected`",
                style="yellow",
            )
        )


@main.command(context_settings={"ignore_unknown_options": False})
@click.option(
    "--http-port", type=click.IntRange(0, 65535), default=None, help="OTLP/HTTP port (default 4318)."
)
@click.option(
    "--grpc-port", type=click.IntRange(0, 65535), default=None, help="OTLP/gRPC port (default 4317)."
)
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
def collector(http_port: int | None, grpc_port: int | None, host: str | None) -> None:
    """Run a local OpenTelemetry collector (rotel) that forwards to Langfuse, until Ctrl-C."""
    from otel_basic import collector as collector_module

    kwargs: dict[str, object] = {}
    if http_port is not None:
        kwargs["http_port"] = http_port
    if grpc_port is not None:
        kwargs["grpc_port"] = grpc_port
    if host is not None:
        kwargs["host"] = host
    run = getattr(collector_module, "run_foreground", None)
    if run is None:
        click.echo("otel-basic collector: not available in this version", err=True)
        sys.exit(2)
    sys.exit(int(run(**kwargs)))


if __name__ == "__main__":
    main()
