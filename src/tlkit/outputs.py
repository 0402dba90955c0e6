"""Where tlkit may write: one rule for every command that writes (fit, compare, pretrain,
export, predict, report, rank / probe / advise ``--json`` and ``--html``, and the Python API),
checked by ``check_output`` before any work.

tlkit writes an output path only when it is

- new (nothing there yet), or an empty folder, for a folder output;
- or tlkit's own earlier product of the same kind, which it can prove: a folder by its marker
  file ``.tlkit`` (JSON: ``made_by``, ``kind``, ``id``; markers of an older tlkit, with a kind
  and no id, and run directories from before the marker, a ``.lock`` beside a ``config.yaml``,
  are recognised too), an HTML page or a JSON result by the marker written inside it, an
  exported model file by its description beside it (``model.onnx.json``, which records the
  file's SHA-256);
- or an existing file the user names with ``--overwrite`` (``overwrite=True`` in the API).

It never writes, even with ``--overwrite``:

- over an input of the same command (predict's ``--data`` file, the run directory of export,
  predict and report, the config and the data files it names), nor deletes a folder that holds
  one;
- into or over a tlkit folder of another kind (a run directory, a compare folder, a
  pretraining folder, an export), nor over any file inside a run directory that is not its own
  product of the same kind (the run's ``metrics.jsonl``, ``summary.json``, ``model/``, an
  earlier predictions file); inside the run directory a command works on (export's default
  ``RUN/export/``, report's ``RUN/report.html``, ``predict --out RUN/new.csv``) it writes new
  paths and its own products only;
- into or over a folder it did not create: ``--overwrite`` replaces files, never a folder.

A refusal is a ``UserError`` (exit 2) naming the path, why, and what to do; nothing has been
written or loaded when it is raised.

Over 450 lines on purpose: the one rule and each of its cases (markers, a run's own files, an
export's proof, --overwrite) in one file, so a reader checks a command against all of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from itertools import islice
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from tlkit.errors import UserError

# The file that makes a folder tlkit's: written when tlkit creates a folder (or takes an empty
# one) for a run directory, a compare, a pretraining or an export.
MARKER = ".tlkit"
# The key that marks a JSON result tlkit wrote, and the comment that marks its HTML pages.
JSON_KEY = "tlkit_output"
PAGE_TAG = "<!-- tlkit-output "

# What each kind of output is, as a message names it.
KINDS = {
    "run": "a tlkit run directory",
    "compare": "a tlkit compare folder",
    "pretrain": "a tlkit pretraining folder",
    "export": "a folder tlkit exported",
    "model": "a model file tlkit exported",
    "description": "an export description tlkit wrote",
    "predictions": "a predictions file",
    "page": "an HTML page tlkit wrote",
    "rank": "a tlkit rank result",
    "probe": "a tlkit probe result",
    "advise": "a tlkit advise result",
    "compare result": "a tlkit compare result",
}
FOLDER_KINDS = ("run", "compare", "pretrain", "export")
# The folders of a run directory that carry no marker of their own (a run's baselines and trials
# do): nothing but fit writes in them.
RUN_FOLDERS = ("model", "model.tmp", "checkpoints", "tensorboard")
# The keys a JSON result of a tlkit before the marker always held: still recognised as its own.
_LEGACY_JSON = {"rank": {"ranked_by", "candidates"}, "probe": {"probes", "profile", "n_groups"},
                "advise": {"advice", "evidence"}, "compare result": {"leaderboard", "best"}}
_MAX_JSON_BYTES = 64 * 1024 * 1024  # a bigger .json is not one tlkit wrote as a result


def new_id() -> str:
    return uuid.uuid4().hex


# --------------------------------------------------------------------------------------------------
# what a path is
# --------------------------------------------------------------------------------------------------


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of ``folder`` as a dict ({} when unreadable), or None when it has none."""
    marker = Path(folder) / MARKER
    if not marker.is_file():
        return None
    try:
        got = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return got if isinstance(got, dict) else {}


def folder_kind(path: Path) -> str | None:
    """What tlkit product the folder ``path`` is ("run", "compare", "pretrain", "export"; "?"
    for a marker that names no kind), or None for a folder tlkit did not make."""
    path = Path(path)
    marker = read_marker(path)
    if marker is not None:
        kind = marker.get("kind")
        return kind if isinstance(kind, str) and kind else "?"
    try:
        # a run directory of a tlkit before the marker: a lock and a config.yaml, which only
        # fit writes together; a pretraining of then: its record
        if (path / ".lock").is_file() and (path / "config.yaml").is_file():
            return "run"
        if (path / "pretrain.json").is_file():
            return "pretrain"
        # a pretraining of then that did not finish: its checkpoints/ alone
        if (path / "checkpoints").is_dir() and [e.name for e in islice(path.iterdir(), 2)] == [
                "checkpoints"] and all(e.name.startswith(("last.pt", ".last.pt.tmp"))
                                       for e in (path / "checkpoints").iterdir()):
            return "pretrain"
    except OSError:
        return None
    return None


def holds_runs(path: Path) -> bool:
    """Whether ``path`` holds tlkit run directories (a compare folder of a tlkit before the
    marker, or a user's folder of runs)."""
    try:
        return any(child.is_dir() and folder_kind(child) == "run" for child in Path(path).iterdir())
    except OSError:
        return False


def owned(path: Path, kind: str) -> bool:
    """``path`` is a folder tlkit created for ``kind``: its marker names that kind, or (made by a
    tlkit before the marker) it is a run directory, a compare folder holding runs, or a
    pretraining."""
    found = folder_kind(path)
    if found is None and kind == "compare":
        return holds_runs(path)
    return found == kind


def _json_of(path: Path) -> Any:
    try:
        if path.stat().st_size > _MAX_JSON_BYTES:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _is_description(meta: Any, name: str | None = None) -> bool:
    """An export's description (``model.onnx.json`` beside ``model.onnx``; ``hf.json`` beside
    the folder ``hf``), of this tlkit (``made_by``) or an older one (its keys)."""
    if not isinstance(meta, dict) or not isinstance(meta.get("file"), str):
        return False
    if name is not None and meta["file"] != name:
        return False
    return meta.get("made_by") == "tlkit" or {"format", "exporter"} <= set(meta)


def sha256_of(path: Path) -> str:
    """A file's SHA-256, read in blocks (an export's proof of origin, a checkpoint's checksum)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _page_kind(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            f.seek(max(0, path.stat().st_size - 4096))
            tail = f.read()
    except OSError:
        return None
    if head.startswith(b"<!DOCTYPE html>") and (PAGE_TAG.encode() in head
                                                 or b"<footer>written by tlkit " in tail):
        return "page"  # the marker, or the footer every page of an older tlkit carries
    return None


def file_kind(path: Path) -> str | None:
    """What tlkit product the file ``path`` provably is, or None."""
    path = Path(path)
    if path.suffix.lower() in (".html", ".htm"):
        return _page_kind(path)
    if path.suffix.lower() == ".json":
        meta = _json_of(path)
        if isinstance(meta, dict):
            mark = meta.get(JSON_KEY)
            if isinstance(mark, dict) and isinstance(mark.get("kind"), str):
                return str(mark["kind"])
            if _is_description(meta):
                return "description"
            for kind, keys in _LEGACY_JSON.items():
                if keys <= set(meta):
                    return kind
    # an exported model file: its description beside it names it (and records its checksum)
    meta = _json_of(path.with_name(path.name + ".json"))
    if _is_description(meta, path.name):
        recorded = meta.get("sha256")
        if recorded is None or recorded == sha256_of(path):
            return "model"
    return None


def enclosing(path: Path) -> tuple[Path, str] | None:
    """The nearest folder above ``path`` that is a tlkit product, and its kind."""
    for parent in Path(path).parents:
        try:
            kind = folder_kind(parent)
        except OSError:
            kind = None
        if kind is not None:
            return parent, kind
    return None


def _resolved(path: Path) -> Path:
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(Path(path).expanduser()))


def _same(a: Path, b: Path) -> bool:
    if _resolved(a) == _resolved(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------
# the inputs of a command
# --------------------------------------------------------------------------------------------------


def config_inputs(raw: Mapping[str, Any] | None) -> list[Path]:
    """The files and folders a config reads that exist here: its data (source, validation,
    test; the adaptation target and its test set; the diagnostics reference), an hf:FOLDER
    backbone and a weights file."""
    if not isinstance(raw, Mapping):
        return []
    found: list[Any] = []

    def section(*keys: str) -> Mapping[str, Any]:
        node: Any = raw
        for k in keys:
            node = node.get(k) if isinstance(node, Mapping) else None
        return node if isinstance(node, Mapping) else {}

    data = section("data")
    found += [data.get(k) for k in ("source", "validation", "test")]
    found += [section("adaptation", "target").get(k) for k in ("source", "test")]
    found.append(section("diagnostics", "reference").get("source"))
    tc = section("transfer_config")
    model = tc.get("source_model")
    if isinstance(model, str) and model.startswith("hf:"):
        found.append(model[3:])
    found.append(tc.get("pretrained_weights"))
    return existing(found)


def existing(values: Iterable[Any]) -> list[Path]:
    """The values that name a file or folder here, as paths (a text given where a path may be,
    however long or odd, is not one)."""
    paths = []
    for value in values:
        if isinstance(value, (str, Path)) and str(value):
            try:
                p = Path(value).expanduser()
                if p.exists():
                    paths.append(p)
            except (OSError, ValueError, RuntimeError):
                pass
    return paths


def run_inputs(run_dir: Path) -> list[Path]:
    """A run directory and the data files its config names (what predict / export / report
    may read from it)."""
    import yaml

    raw = None
    try:
        raw = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        pass
    return [Path(run_dir), *config_inputs(raw if isinstance(raw, Mapping) else None)]


# --------------------------------------------------------------------------------------------------
# the rule
# --------------------------------------------------------------------------------------------------


class _Refusal:
    """How a refusal names the path and the way out: ``refuse(why)`` raises the UserError."""

    def __init__(self, p: Path, flag: str, side_of: Path | None) -> None:
        self.named = side_of is None
        self.where = f"{flag} {p}" if self.named else f"{p} (written beside {side_of})"
        self.elsewhere = (f"choose another {flag}" if self.named
                          else f"move it, or give {flag} another name")

    def refuse(self, why: str, fix: str | None = None) -> UserError:
        return UserError(f"{self.where} {why}: {fix or self.elsewhere} (nothing was written)")


def check_output(path: Path | str, kind: str, *, flag: str = "--out",
                 inputs: Iterable[Path | str] = (), own: Path | str | None = None,
                 overwrite: bool = False, side_of: Path | None = None,
                 overwrite_hint: str = "--overwrite", nested: bool = False,
                 example: str | None = None) -> None:
    """Refuse, before any work, to write ``kind`` at ``path`` where the rule above forbids it.

    ``inputs``: what the command reads (never written over; a folder output that would be
    replaced whole never holds one). ``own``: the run directory the command works on, inside
    which it may write new paths and its own products. ``overwrite``: the user asked to replace
    an existing file at ``path`` that tlkit cannot prove it wrote. ``side_of``: ``path`` is
    written beside this named output (a description, a tokenizer folder): ``--overwrite`` does
    not reach it. ``nested``: a run tlkit itself places inside another of its folders (a
    compare's runs, a fit's baselines): the folders above are not checked. ``example``: a file
    name to suggest where ``path`` is a folder."""
    p = Path(path).expanduser()
    say = _Refusal(p, flag, side_of)
    try:
        _check(p, kind, say, inputs, Path(own) if own else None, overwrite, overwrite_hint,
               nested, example)
    except OSError as e:  # a name too long for the file system, a folder it may not read
        raise say.refuse(f"cannot be checked ({e.strerror or e})") from None


def _check(p: Path, kind: str, say: _Refusal, inputs: Iterable[Path | str], own: Path | None,
           overwrite: bool, overwrite_hint: str, nested: bool, example: str | None) -> None:
    # 1. never over an input of the same command
    for given in inputs:
        i = Path(given).expanduser()
        if _same(p, i):
            raise say.refuse(f"is {_input_name(i)}, an input of this command; tlkit never writes "
                             "over an input, even with --overwrite")
        if kind == "export" and p.is_dir() and _resolved(i).is_relative_to(_resolved(p)):
            raise say.refuse(f"holds {i}, an input of this command; the export would replace "
                             "the folder")
    # 2. never into another tlkit folder, nor among the own run's folders
    inside_own = False if nested else _check_place(p, own, say)
    if not (p.exists() or p.is_symlink()):
        return  # a new path
    # 3. an existing path: tlkit's own product of the same kind, or (files) --overwrite
    if kind in FOLDER_KINDS:
        _check_folder(p, kind, say)
    else:
        _check_file(p, kind, say, own if inside_own else None, overwrite, overwrite_hint,
                    example)


def _check_place(p: Path, own: Path | None, say: _Refusal) -> bool:
    """Refuse ``p`` inside a tlkit folder other than ``own``, or inside one of ``own``'s own
    folders (model/, checkpoints/, ...: a resumed fit replaces them); whether ``p`` is in
    ``own``."""
    around = enclosing(_resolved(p))
    if around is None:
        return False
    folder, its = around
    if own is None or not _same(folder, own):
        raise say.refuse(f"is inside {folder}, {KINDS.get(its, 'a tlkit folder')}; tlkit never "
                         "writes into or over another tlkit folder's files, even with "
                         "--overwrite")
    top = _resolved(p).relative_to(_resolved(own)).parts
    if len(top) > 1 and top[0] in RUN_FOLDERS:
        raise say.refuse(f"is inside {own / top[0]}, a folder of the run directory {own}; tlkit "
                         "writes there only the run's own files")
    return True


def _check_file(p: Path, kind: str, say: _Refusal, own: Path | str | None, overwrite: bool,
                overwrite_hint: str, example: str | None) -> None:
    """An existing ``p`` where a file of ``kind`` goes: tlkit's own of that kind, or a file
    the user named with ``overwrite`` (not in a run: ``own`` is the run ``p`` is in)."""
    if p.is_dir():
        held = folder_kind(p)
        if held is not None:
            raise say.refuse(f"is {KINDS.get(held, 'a tlkit folder')}; tlkit never writes into "
                             "or over another tlkit folder, even with --overwrite")
        raise say.refuse("is a folder, and tlkit writes one file there",
                         f"give a file name (e.g. {p / (example or _example(kind))}), or "
                         f"{say.elsewhere}")
    found = file_kind(p)
    if found == kind:
        return  # tlkit's own earlier output of the same kind: replaced
    if own is not None:
        raise say.refuse(f"is a file of the run directory {own}, and not "
                         f"{KINDS.get(kind, kind)}; tlkit never replaces a run's own files, even "
                         "with --overwrite")
    if overwrite and say.named:
        return
    what = (f"it is {KINDS[found]}, not {KINDS.get(kind, kind)}" if found in KINDS
            else "tlkit cannot tell it wrote it (a predictions file carries no mark of tlkit's)"
            if kind == "predictions"
            else f"tlkit cannot tell it wrote it (it is not {KINDS.get(kind, kind)})")
    raise say.refuse(f"exists and {what}; tlkit does not replace a file it did not create",
                     f"{say.elsewhere}, or add {overwrite_hint} to replace it" if say.named
                     else None)


def _check_folder(p: Path, kind: str, say: _Refusal) -> None:
    if not p.is_dir():
        raise say.refuse(f"is a file, and tlkit writes a folder there ({KINDS[kind]})")
    its = folder_kind(p)
    if its == kind or (its is None and kind == "compare" and holds_runs(p)):
        return  # its own earlier product: the command decides (resume, replace)
    if its is not None:
        raise say.refuse(f"is {KINDS.get(its, 'a tlkit folder of another kind')}, not "
                         f"{KINDS[kind]}; tlkit never writes into or over another kind of tlkit "
                         "folder, even with --overwrite")
    try:
        # the marker being written (another process of the same launch claims the folder) and
        # the lock are tlkit's own, not the user's
        entries = sorted(e.name for e in p.iterdir()
                         if e.name != ".lock" and not e.name.startswith(f"{MARKER}.tmp")
                         and not e.name.startswith(f".{MARKER}.tmp"))
    except OSError as e:
        raise UserError(f"cannot read {say.where} ({e.strerror or e}); {say.elsewhere}") from None
    if entries:
        shown = ", ".join(entries[:5]) + (" ..." if len(entries) > 5 else "")
        runs = " (it holds tlkit run directories)" if holds_runs(p) else ""
        raise say.refuse(f"is a folder tlkit did not create, and it is not empty "
                         f"({len(entries)} entries: {shown}){runs}; tlkit writes only into a new "
                         "or empty folder, or one of its own, and never deletes a folder it did "
                         "not create")


def _input_name(i: Path) -> str:
    kind = folder_kind(i) if i.is_dir() else None
    if kind == "run":
        return "the run directory it reads"
    return f"the {'folder' if i.is_dir() else 'file'} it reads"


def _example(kind: str) -> str:
    return {"model": "model.onnx", "predictions": "predictions.csv", "page": "report.html",
            "description": "model.onnx.json"}.get(kind, "result.json")


# --------------------------------------------------------------------------------------------------
# writing, marked
# --------------------------------------------------------------------------------------------------


def marker_for(kind: str, **extra: Any) -> dict[str, Any]:
    from tlkit import __version__

    return {"made_by": "tlkit", "kind": kind, "id": new_id(), "version": __version__, **extra}


def claim(path: Path, kind: str, **extra: Any) -> None:
    """Create ``path`` (or take it, empty) for ``kind`` and mark it as tlkit's (the marker is
    kept when it is already there)."""
    from tlkit.files import atomic_write, write_error  # torch: not for the pages' writers

    check_output(path, kind, nested=True)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if read_marker(path) is None:
            text = json.dumps(marker_for(kind, **extra)) + "\n"
            atomic_write(path / MARKER, lambda tmp: tmp.write_text(text))
    except OSError as e:
        raise write_error(path, e) from None


def page_tag(kind: str = "page") -> str:
    """The comment that marks an HTML page as tlkit's (the line after the doctype)."""
    return f"{PAGE_TAG}{json.dumps(marker_for(kind))} -->\n"


def write_file(path: Path, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` then rename over ``path``: a reader never sees half a file; a place that
    cannot be written is a UserError naming it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {path} ({e.strerror or e}); the folder is read-only or "
                        "full: write it elsewhere") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return path


def write_json(path: Path | str, obj: Any, kind: str) -> Path:
    """``obj`` as JSON at ``path``, marked as tlkit's ``kind`` (a dict gets the key
    ``tlkit_output``) so that the next run of the command may replace it."""
    if isinstance(obj, dict):
        obj = {**obj, JSON_KEY: marker_for(kind)}
    text = json.dumps(obj, indent=2, default=str) + "\n"
    return write_file(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))
