"""The one exception type that the CLI turns into a clear line on stderr and exit code 2."""


class CnnkitError(Exception):
    """Bad input from the user: a missing file, a corrupt image, an unknown model, ...

    The CLI prints ``error: <message>`` on stderr and exits with code 2, never a traceback.
    """
