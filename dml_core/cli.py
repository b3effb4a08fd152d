"""What the command-line entry points share: one-line errors for users' mistakes."""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

from dml_core.errors import first_line


def user_error_types() -> tuple[type[BaseException], ...]:
    """A config, data folder, model or loss setting that cannot work; anything else is a bug
    and keeps its traceback. ConfigError, DatasetError, ModelError, UnknownNameError,
    LossConfigError and EvaluationError are all ValueErrors."""
    from dml_core.training import NonFiniteLossError

    return (ValueError, NonFiniteLossError, FileNotFoundError)


def sigterm_as_ctrl_c() -> None:
    """Handle SIGTERM (what `kill`, Slurm and Kubernetes send) exactly as Ctrl-C: it raises SIGINT
    in this process, so the same clean stop runs (Tune's graceful one while a sweep runs), ending
    with exit 130 and the resume hint. `ray.init` installs its own SIGTERM handler (a bare
    sys.exit, then Ray's C++ abort: exit 134): call this again after it."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGINT))


@contextmanager
def one_line_errors(prog: str, debug: bool = False) -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130)
    except user_error_types() as e:
        if debug:
            raise
        print(f"{prog}: error: {first_line(e)}", file=sys.stderr)
        raise SystemExit(2)
