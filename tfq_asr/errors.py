"""One error type for problems a user can fix (bad file, option, model name), and the CLI wrapper
that turns it into a one-line message and a non-zero exit instead of a traceback."""
from __future__ import annotations

import sys


class UserError(Exception):
    """A problem with the user's input; the message names the file, option or layer."""


def cli_main(main, argv=None) -> None:
    try:
        code = main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
