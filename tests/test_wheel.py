"""The wheel as a library user gets it: otel_basic only, core dependencies only, and it works.

Builds the wheel, installs it into a fresh venv WITHOUT extras (pip resolves the core dependencies
from its cache or the registry), then, in that venv: configure against a local receiver, send a
span, flush, and check that no web server, CLI, gRPC, collector or app package was installed or
imported. Slow (a minute or two: pip installs LlamaIndex core and the SDK).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_INSTALLED = ("uvicorn", "starlette", "fastapi", "llama-agents-server", "rich", "grpcio", "rotel", "pytest")
# click is not here: llama-index-core installs it (through nltk) and httpx imports it when present
# (for httpx's own CLI). It is not a dependency of otel-basic's core (checked on the metadata).
NOT_IMPORTED = ("basic", "rich", "uvicorn", "starlette", "fastapi", "llama_agents", "grpc", "rotel", "pytest")

CHECK = textwrap.dedent(
    """
    import json, os, sys
    import otel_basic
    from otel_basic.testing import LangfuseReceiver

    with LangfuseReceiver() as receiver:
        os.environ.update(receiver.env())
        os.environ["OTEL_BASIC_SPOOL_DIR"] = sys.argv[1]
        telemetry = otel_basic.configure()
        assert telemetry.enabled, telemetry.settings.reason
        with otel_basic.get_tracer("wheel").start_as_current_span("from-the-wheel"):
            pass
        report = otel_basic.flush(timeout=10)
        names = receiver.span_names()
        otel_basic.shutdown()
    roots = sorted({m.split(".")[0] for m in sys.modules})
    print(json.dumps({"ok": bool(report), "names": names, "modules": roots,
                      "typed": os.path.exists(os.path.join(os.path.dirname(otel_basic.__file__), "py.typed"))}))
    """
)


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_without_extras(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "-q", str(ROOT), "-w", str(dist)], check=True, timeout=300)
    (wheel,) = dist.glob("otel_basic-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        tops = {name.split("/")[0] for name in zf.namelist()}
        requires = zf.read(next(n for n in zf.namelist() if n.endswith("METADATA"))).decode()
        entry_points = zf.read(next(n for n in zf.namelist() if n.endswith("entry_points.txt"))).decode()
    assert "[pytest11]" not in entry_points  # the pytest plugin is opt-in: never loaded by every pytest run
    assert "[opentelemetry_configurator]" in entry_points and "[opentelemetry_distro]" in entry_points
    assert tops == {"otel_basic", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    core = [line for line in requires.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    for name in ("click", "rich", "uvicorn", "starlette", "llama-agents-server", "grpcio", "rotel"):
        assert not any(line.split()[1].startswith(name) for line in core), core

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    install = subprocess.run(
        [py, "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True, timeout=900
    )
    assert install.returncode == 0, install.stderr[-3000:]
    listed = subprocess.run([py, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True)
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert not installed & set(NOT_INSTALLED), installed & set(NOT_INSTALLED)

    script = tmp_path / "check.py"
    script.write_text(CHECK)
    proc = subprocess.run(
        [py, str(script), str(tmp_path / "spool")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # not the repo: nothing from src/ on sys.path
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] and "from-the-wheel" in result["names"]
    assert result["typed"]
    assert not set(result["modules"]) & set(NOT_IMPORTED), set(result["modules"]) & set(NOT_IMPORTED)

    # the console script explains the missing [cli] extra in one line, no traceback
    cli = subprocess.run([str(venv / "bin" / "otel-basic"), "doctor"], capture_output=True, text=True, timeout=60)
    assert cli.returncode != 0 and "otel-basic[cli]" in cli.stderr and "Traceback" not in cli.stderr
