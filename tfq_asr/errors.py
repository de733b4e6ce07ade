"""One error type for problems a user can fix (bad file, option, model name), one for model
files that fail while running, and the CLI wrapper that turns either into a one-line message
and a non-zero exit (2 and 1) instead of a traceback."""
from __future__ import annotations

import os
import sys


class UserError(Exception):
    """A problem with the user's input; the message names the file, option or layer."""


class RuntimeFailure(RuntimeError):
    """A model file that loaded but failed to run (LiteRT or a TFQ op said why); the message
    names the file (and the layer where an op failed)."""


def check_option_minimums(args, **least) -> None:
    """A UserError naming the first CLI option (an argparse attribute) below its least value,
    e.g. `--threads 0: must be at least 1`; options left at None are skipped."""
    for name, low in least.items():
        value = getattr(args, name)
        if value is not None and not value >= low:  # NaN fails too
            raise UserError(f"--{name.replace('_', '-')} {value}: must be at least {low}")


def check_output_file(option: str, path):
    """`path` as a Path, or a UserError naming `option` if a file cannot be written there (a
    directory, or a folder that does not exist): checked before the work, not after it."""
    from pathlib import Path
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise UserError(f"{option} {path}: directory {path.parent} does not exist")
    return path


def _silence_native_stderr() -> None:
    """TensorFlow's C++ runtime logs start-up chatter (oneDNN, CUDA probing) straight to fd 2,
    ignoring TF_CPP_MIN_LOG_LEVEL. Point fd 2 at /dev/null and keep Python's sys.stderr (our
    messages, tqdm) on the real stream. TFQ_VERBOSE=1 keeps native logs."""
    if os.environ.get("TFQ_VERBOSE") == "1":
        return
    try:
        sys.stderr.flush()
        real = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        sys.stderr = os.fdopen(real, "w", buffering=1)
    except OSError:
        pass


def run_cli(main, argv=None) -> int:
    """main(argv) with the CLI's error contract: a UserError or RuntimeFailure becomes one
    `error: ...` line on stderr and exit status 2 or 1. Returns the status."""
    try:
        return main(argv) or 0
    except UserError as err:
        _close_progress_bars()
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeFailure as err:
        _close_progress_bars()
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _close_progress_bars()
        print("interrupted", file=sys.stderr)
        return 130


def _close_progress_bars() -> None:
    """A tqdm bar left open by the failing step ends its line, so that the error starts its own
    (it used to follow the bar: `calibration audio:   0%| ...error: ...`)."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


def cli_main(main, argv=None) -> None:
    _silence_native_stderr()
    sys.exit(run_cli(main, argv))
