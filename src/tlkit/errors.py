"""Errors a user can fix: the command line turns them into exit code 2 and one message."""


class UserError(Exception):
    """Something in the user's config, data or command is wrong.

    The message says what is wrong and how to fix it; the CLI prints it without a traceback
    and exits with code 2.
    """
