"""The ``lotto`` entry point (a process per command): hands the command to a local run's fork server when there
is one (lotto/forkserver.py), else stamps this process's provenance and runs the command itself
(:mod:`lotto.commands`, the command table both share).
"""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    """``lotto`` with ``argv`` (None: this process's command line); the command's exit status."""
    if argv is None:  # the `lotto` process of a job: a local run's fork server may run it
        from lotto import forkserver

        code = forkserver.delegate(sys.argv[1:])
        if code is not None:
            return code
    # Before the command's modules are imported: the record names the code this process loads from here on, and
    # a lotto file that changes during the run is refused at its import (lotto.provenance).
    from lotto import provenance

    provenance.stamp()
    from lotto.commands import run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
