"""Errors a user can fix: the command line turns them into exit code 2 and one message."""


class UserError(Exception):
    """Something in the user's config, data or command is wrong.

    The message says what is wrong and how to fix it; the CLI prints it without a traceback
    and exits with code 2.
    """


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that cleanup runs (``tlkit.cli`` installs the
    handler): a stopped run leaves no temporary file and exits 143."""


def raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()
