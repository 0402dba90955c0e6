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


def require(modules: tuple[str, ...], extra: str, feature: str) -> None:
    """Check that the optional packages a feature needs are installed; if not, a UserError
    naming the pip extra that installs them (``pip install 'tlkit[extra]'``)."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"{feature} needs {', '.join(missing)}, which is not installed; "
                        f"install it with: pip install 'tlkit[{extra}]' (or pip install "
                        f"{' '.join(missing)})")
