"""What the command-line entry points share: one-line errors for users' mistakes."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from dml_core.errors import first_line


def user_error_types() -> tuple[type[BaseException], ...]:
    """A config, data folder, model or loss setting that cannot work; anything else is a bug
    and keeps its traceback. ConfigError, DatasetError, ModelError, UnknownNameError,
    LossConfigError and EvaluationError are all ValueErrors."""
    from dml_core.training import NonFiniteLossError

    return (ValueError, NonFiniteLossError, FileNotFoundError)


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
