"""The exceptions that the CLI turns into a clear line on stderr and an exit code, never a traceback."""


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
