"""Files from and to the user's disk: written atomically (a crash leaves the old file or the new
one, never half of one; a full disk says so), and weight files read without running code (a
pickle that would import anything beyond tensors is refused, naming what it would import)."""

from __future__ import annotations

import argparse
import errno
import os
import pickle
import re
import signal
import threading
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from tlkit.errors import UserError


def disk_full(e: BaseException) -> bool:
    """Whether ``e`` says the disk (or the user's quota) is full. safetensors reports I/O errors
    as its own exception type, with the OS error number in the message."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return bool(re.search(rf"os error ({errno.ENOSPC}|{errno.EDQUOT})\b|No space left on device"
                          r"|Disk quota exceeded", str(e)))


def write_error(path: Path, e: BaseException) -> UserError:
    """The message for a failed write of ``path`` in a run directory: nothing earlier is lost."""
    if disk_full(e):
        return UserError(
            f"no space left on device writing {path}; the previous checkpoint is intact; free "
            "space (or choose another --out) and run again with --resume"
        )
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:200]
    return UserError(
        f"could not write {path}: {reason}; the previous checkpoint is intact; fix the cause "
        "(permissions, a missing or read-only folder) and run again with --resume"
    )


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while a file is written and renamed into place, then act on them:
    Ctrl-C or a kill in the middle of a checkpoint write ends as "interrupted" with the file
    whole (the old one or the new one), not as an error from inside the writer. Only the main
    thread can hold signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for number, before in previous.items():
            signal.signal(number, before)
        if held:
            handler = previous[held[0]]
            if callable(handler):
                handler(held[0], None)  # Python's own SIGINT handler raises KeyboardInterrupt
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), held[0])


# The temporary names atomic_write uses: ``.NAME.tmpPID``.
LEFTOVER = re.compile(r"^\..+\.tmp\d+$")


def remove_leftovers(folder: Path) -> list[str]:
    """Delete the temporary files a killed writer left in ``folder`` (tlkit's own names only;
    the caller holds the folder's lock, so no writer is at work); the names removed."""
    removed: list[str] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        if p.is_file() and LEFTOVER.match(p.name):
            try:
                p.unlink()
                removed.append(p.name)
            except OSError:
                pass
    return removed


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then move the result over ``path`` atomically. A failed write
    (a full disk, say) leaves ``path`` as it was and raises UserError; Ctrl-C and SIGTERM wait
    for the rename (``deferred_signals``)."""
    with deferred_signals():
        _atomic_write(path, write)


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except Exception as e:
        if isinstance(e, OSError) or disk_full(e):
            raise write_error(path, e) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink(missing_ok=True)


# Files that unpickle (torch.save's format and plain pickles); safetensors needs no check.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


def _load_weights_only(path: Path) -> Any:
    # timm's training checkpoints carry their argparse.Namespace; it builds no code.
    with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return torch.load(path, map_location="cpu", weights_only=True,
                          mmap=zipfile.is_zipfile(path))


def _pickle_globals(path: Path) -> list[str]:
    """The classes and functions a file's pickle would import, read from its opcodes without
    running any (torch's zip format through torch; a plain pickle through pickletools)."""
    if zipfile.is_zipfile(path):
        try:
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # noqa: BLE001 - a damaged zip: no list to give
            return []
    import pickletools

    found: list[str] = []
    strings: list[str] = []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                    strings.append(str(arg))
                elif op.name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # noqa: BLE001 - not a pickle (or cut short): no globals to report
        pass
    # torch's storages and rebuild functions and OrderedDict are what a plain state_dict holds
    harmless = ("torch._utils.", "torch.FloatStorage", "torch.LongStorage", "torch.HalfStorage",
                "torch.BFloat16Storage", "torch.DoubleStorage", "torch.IntStorage",
                "torch.ByteStorage", "torch.BoolStorage", "collections.OrderedDict")
    return [g for g in found if not g.startswith(harmless)]


def unreadable(path: Path, what: str, e: Exception, fix: str) -> UserError:
    unsafe = _pickle_globals(path)
    if unsafe:
        return UserError(
            f"{what} {path} holds pickled Python objects ({', '.join(unsafe[:5])}"
            f"{', ...' if len(unsafe) > 5 else ''}), not just tensors; unpickling them can run "
            "arbitrary code, so tlkit, which loads weights only through safetensors or "
            f"torch.load(weights_only=True), refused the file and ran none of it. {fix}"
        )
    reason = ("not a PyTorch weights file" if isinstance(e, pickle.UnpicklingError)
              else f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}")
    return UserError(f"{what} {path} cannot be read ({reason}); it may be truncated or corrupt. "
                     f"{fix}")


def check_weights_file(path: Path, what: str = "pretrained_weights") -> None:
    """Refuse a weights file, or a folder's pytorch_model*.bin, whose pickle would run code,
    before a third-party loader sees it."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("pytorch_model*.bin"))
    elif path.suffix.lower() in PICKLE_SUFFIXES:
        files = [path]
    else:
        files = []
    for f in files:
        try:
            _load_weights_only(f)
        except Exception as e:  # noqa: BLE001 - whatever the file holds, the user must change it
            raise unreadable(f, what, e, "Fix: use weights you trust, saved as safetensors or "
                              "as a plain state_dict (torch.save(model.state_dict(), path))"
                              ) from None
