"""The exceptions that the CLI turns into a clear line on stderr and an exit code, never a traceback."""

from __future__ import annotations

import math
from typing import Any, Callable


class CnnkitError(Exception):
    """Bad input from the user: a missing file, a corrupt image, an unknown model, ...

    The CLI prints ``error: <message>`` on stderr and exits with :attr:`exit_code` (2), never a traceback.
    """

    exit_code = 2


class Interrupted(CnnkitError):
    """A signal (SIGTERM) stopped the work at a safe point after saving it; exit 128 + the signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def checked_number(value: Any, flag: str, expected: str, valid: Callable[[float], bool]) -> float:
    """``value`` as a float that ``valid`` accepts, else one line naming ``flag``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if math.isnan(number) or not valid(number):
        raise CnnkitError(f"{flag} {value}: expected {expected}")
    return number
