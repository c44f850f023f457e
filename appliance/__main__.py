"""The ``appliance`` command's entry point (``[project.scripts]``; also ``python -m appliance``).

The CLI takes a moment to import (its commands bring in the TPM, audit and update stacks), and a
Ctrl-C meanwhile came before :func:`appliance.cli.main` could catch it: a KeyboardInterrupt
traceback, and death by SIGINT. So this module imports nothing of the appliance at its top and
imports the CLI inside its ``try``: an interrupt anywhere in the command, its import included,
ends with one line and exit code 130 (128 + SIGINT, as a shell reports it).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``appliance`` command on ``argv``; return its exit code (130 after Ctrl-C)."""
    try:
        from appliance.cli import main as cli_main

        return cli_main(argv)
    except KeyboardInterrupt:
        # The command's own handler explains an interrupted command; this one is reached only
        # before it runs (or after), where there is nothing to undo or explain.
        print("\nappliance: interrupted (Ctrl-C).", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
