"""Run a command-line tool of tools/ the way a user does, for tests.

By default the tool's main(argv) runs in this process, through the same error handling as its
command line (tfq_asr.errors.run_cli), with stdout and stderr captured: a fresh interpreter
would spend most of a test's time importing TensorFlow again. `isolated=True` runs a real
`python tools/<tool>` subprocess, for the checks that are about the process itself (what
reaches stderr from native code, the exit status the shell sees)."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import subprocess
import sys

from tests.conftest import ROOT

_MODULES: dict = {}


def _tool_module(tool: str):
    if tool not in _MODULES:
        path = ROOT / "tools" / tool
        spec = importlib.util.spec_from_file_location(f"tfq_tool_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _MODULES[tool] = module
    return _MODULES[tool]


def run_tool(tool: str, *args, isolated: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python tools/<tool> args...`: returns the exit status, stdout and stderr."""
    argv = [str(a) for a in args]
    if isolated:
        return subprocess.run([sys.executable, str(ROOT / "tools" / tool), *argv],
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    from tfq_asr.errors import run_cli
    module = _tool_module(tool)
    out, err = io.StringIO(), io.StringIO()
    saved_argv = sys.argv
    sys.argv = [str(ROOT / "tools" / tool), *argv]  # argparse names the program from it
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = run_cli(module.main, argv)
            except SystemExit as stop:  # argparse's usage errors, --help
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
                if isinstance(stop.code, str):
                    print(stop.code, file=sys.stderr)
    finally:
        sys.argv = saved_argv
    return subprocess.CompletedProcess([tool, *argv], code, out.getvalue(), err.getvalue())


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str, status: int | None = None) -> None:
    """The tool failed with exactly one `error: ...` line naming every needle."""
    assert proc.returncode != 0 if status is None else proc.returncode == status, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
