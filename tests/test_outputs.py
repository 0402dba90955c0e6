"""The output rule (src/tlkit/outputs.py): every command that writes (fit, compare, pretrain,
export in each format, predict, report, rank / probe / advise --json and --html, the Python API)
writes only a new path, or its own earlier product of the same kind, or an existing file the
user names with --overwrite; never an input of the command, a run directory or another tlkit
folder, a file inside a run, or a folder tlkit did not create. Refusals come before any work,
exit 2, naming the path, why, and what to do. docs/reliability-r3-outputs.md lists the cases.

One tiny finished run per module (an image run: ~10 s), copied for "another run".
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from tlkit.cli import main
from tlkit.errors import UserError
from tlkit.outputs import (MARKER, check_output, claim, file_kind, folder_kind, read_marker,
                           write_json)

CONFIG = """\
transfer_config:
  source_model: timm:test_efficientnet
  pretrained_weights: none
  freeze_strategy: all_frozen
  epochs: 1
  batch_size: 16
  min_steps: 0
  cache: {disk: false}
data:
  source: digits
  image_size: 32
  limit: 120
  test_fraction: 0.2
"""


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if ": error: " in x]
    assert lines, f"no error message in:\n{err}"
    assert "Traceback" not in err
    return lines[-1]


def refused(capsys: pytest.CaptureFixture[str], *args: object, says: str = "") -> str:
    """Run a command that must be refused by the output rule: exit 2, no traceback, one line
    naming ``says``."""
    code, err = cli(capsys, *args)
    assert code == 2, (args, err[-2000:])
    line = error_line(err)
    assert says in line, (args, line)
    return line


def sha256s(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (the marker and lock too) with its SHA-256; folders by name."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run (``run``), and a copy of it (``other``: another run), with their config."""
    tmp = tmp_path_factory.mktemp("outputs")
    (tmp / "c.yaml").write_text(CONFIG)
    old = os.environ.get("TLKIT_CACHE")
    os.environ["TLKIT_CACHE"] = str(tmp / "cache")
    try:
        assert main(["fit", str(tmp / "c.yaml"), "--out", str(tmp / "run"), "--no-report"]) == 0
    finally:
        if old is None:
            os.environ.pop("TLKIT_CACHE", None)
        else:
            os.environ["TLKIT_CACHE"] = old
    shutil.copytree(tmp / "run", tmp / "other")
    return tmp


@pytest.fixture()
def run(made: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the finished run for a test that writes into it; ``tmp_path`` holds the
    config (c.yaml) and another run (other/)."""
    monkeypatch.setenv("TLKIT_CACHE", str(made / "cache"))
    shutil.copytree(made / "run", tmp_path / "run")
    shutil.copytree(made / "other", tmp_path / "other")
    shutil.copy(made / "c.yaml", tmp_path / "c.yaml")
    return tmp_path / "run"


def image(path: Path) -> Path:
    from PIL import Image

    Image.new("L", (8, 8), 100).save(path)
    return path


# ==================================================================================================
# the rule's pieces
# ==================================================================================================


def test_a_marker_names_its_kind_and_an_id_and_older_markers_stay_recognised(
        tmp_path: Path) -> None:
    claim(tmp_path / "a", "pretrain")
    marker = read_marker(tmp_path / "a")
    assert marker is not None and marker["kind"] == "pretrain" and len(marker["id"]) == 32
    assert folder_kind(tmp_path / "a") == "pretrain"
    old = tmp_path / "old"  # an export folder of a tlkit whose marker had no id
    old.mkdir()
    (old / MARKER).write_text('{"made_by": "tlkit", "kind": "export"}\n')
    assert folder_kind(old) == "export"
    legacy = tmp_path / "legacy_run"  # a run directory from before the marker
    legacy.mkdir()
    (legacy / ".lock").write_text("")
    (legacy / "config.yaml").write_text("x: 1\n")
    assert folder_kind(legacy) == "run"
    with pytest.raises(UserError, match="a tlkit run directory, not a folder tlkit exported"):
        check_output(legacy, "export")
    with pytest.raises(UserError, match="tlkit pretraining folder, not a tlkit run directory"):
        check_output(tmp_path / "a", "run")


def test_json_results_and_pages_carry_their_mark_and_a_changed_export_is_not_tlkits(
        tmp_path: Path) -> None:
    out = write_json(tmp_path / "r.json", {"candidates": []}, "rank")
    assert file_kind(out) == "rank"
    check_output(out, "rank")  # its own: replaced without --overwrite
    with pytest.raises(UserError, match="it is a tlkit rank result, not a tlkit probe result"):
        check_output(out, "probe")
    check_output(out, "probe", overwrite=True)
    old = tmp_path / "old.json"  # an advise result of a tlkit before the mark
    old.write_text(json.dumps({"advice": {}, "evidence": {}}))
    assert file_kind(old) == "advise"
    from tlkit.report.html import page

    (tmp_path / "p.html").write_text(page("t", "s", [("a", "A", "<p>x</p>")]))
    assert file_kind(tmp_path / "p.html") == "page"
    (tmp_path / "older.html").write_text("<!DOCTYPE html>\n<html>...<footer>written by tlkit 0.1.0 "
                                         "on 2024-01-01</footer></body></html>\n")
    assert file_kind(tmp_path / "older.html") == "page"
    # an exported file is proven by its description's checksum: once changed, it is not tlkit's
    model = tmp_path / "m.onnx"
    model.write_bytes(b"onnx bytes")
    (tmp_path / "m.onnx.json").write_text(json.dumps({
        "format": "onnx", "file": "m.onnx", "exporter": "x", "made_by": "tlkit",
        "sha256": hashlib.sha256(b"onnx bytes").hexdigest()}))
    assert file_kind(model) == "model"
    model.write_bytes(b"the user's own model now")
    assert file_kind(model) is None
    with pytest.raises(UserError, match="add --overwrite to replace it"):
        check_output(model, "model")


# ==================================================================================================
# one test per command
# ==================================================================================================


@pytest.mark.slow  # the module's run (~10 s)
@pytest.mark.parametrize("fmt", ["hf", "timm", "peft", "onnx", "torchscript"])
def test_export_never_replaces_another_run_or_its_own_run(
        fmt: str, run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: --format hf --out OTHER_RUN exited 0 having replaced that run; --out RUN
    deleted the run's checkpoints, summary and model/ and exited 1."""
    other = run.parent / "other"
    before = sha256s(run), sha256s(other)
    refused(capsys, "export", run, "--format", fmt, "--out", other, "--overwrite",
            says=f"--out {other} is a tlkit run directory")
    refused(capsys, "export", run, "--format", fmt, "--out", run, "--overwrite",
            says="the run directory it reads, an input of this command")
    for inside in (other / "export" / "x", run / "model" / "x", run / "checkpoints" / "x"):
        refused(capsys, "export", run, "--format", fmt, "--out", inside, says=str(inside))
    assert (sha256s(run), sha256s(other)) == before
    if fmt in ("hf", "timm", "peft"):  # an export folder (its own kind) that holds the run
        holder = run.parent / "exports"
        claim(holder, "export")
        inner = holder / "run"
        shutil.copytree(run, inner)
        refused(capsys, "export", inner, "--format", fmt, "--out", holder,
                says="an input of this command; the export would replace the folder")
        assert sha256s(inner) == before[0]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_to_an_existing_folder_or_a_users_file_is_refused_before_the_model_loads(
        fmt: str, run: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: torchscript to an existing folder was a traceback (exit 1); onnx to one said to
    try torchscript."""
    import tlkit.export.run

    def no_load(*a: object) -> None:
        raise AssertionError("the model loaded before the refusal")

    monkeypatch.setattr(tlkit.export.run, "load_model", no_load)
    folder = run.parent / "exports"
    folder.mkdir()
    line = refused(capsys, "export", run, "--format", fmt, "--out", folder,
                   says=f"--out {folder} is a folder, and tlkit writes one file there")
    assert "torchscript" not in line or fmt == "torchscript"
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    mine = run.parent / f"mine{suffix}"
    mine.write_bytes(b"the user's model")
    refused(capsys, "export", run, "--format", fmt, "--out", mine, says="add --overwrite")
    (run.parent / f"new{suffix}.json").write_text("{}")  # the description's place: the user's
    refused(capsys, "export", run, "--format", fmt, "--out", run.parent / f"new{suffix}",
            "--overwrite", says="written beside")
    assert mine.read_bytes() == b"the user's model"


@pytest.mark.slow  # two exports
def test_export_replaces_its_own_earlier_export_and_a_named_file_with_overwrite(
        run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(2):  # its own earlier export of the same kind, at the default place
        code, err = cli(capsys, "export", run, "--format", "torchscript")
        assert code == 0, err
    desc = json.loads((run / "export" / "model.pt.json").read_text())
    assert desc["made_by"] == "tlkit" and len(desc["sha256"]) == 64
    mine = run.parent / "mine.pt"
    mine.write_bytes(b"the user's model")
    code, err = cli(capsys, "export", run, "--format", "torchscript", "--out", mine,
                    "--overwrite")
    assert code == 0, err
    assert mine.read_bytes() != b"the user's model"
    assert not [p for p in run.parent.iterdir() if ".tmp" in p.name]  # no temporary file left


@pytest.mark.slow
def test_predict_never_writes_over_its_data_an_existing_file_or_a_runs_files(
        run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: --data reviews.csv --out reviews.csv overwrote the input, exit 0; any existing
    --out (mine.csv, the run's metrics.jsonl) was replaced without a word."""
    work = run.parent
    img = image(work / "a.png")
    data = work / "reviews.csv"
    data.write_text(f"image\n{img}\n")
    before = data.read_bytes()
    for extra in ([], ["--overwrite"]):
        refused(capsys, "predict", run, "--data", data, "--out", data, *extra,
                says="an input of this command")
    assert data.read_bytes() == before
    mine = work / "mine.csv"
    mine.write_text("the user's own table\n")
    refused(capsys, "predict", run, img, "--out", mine, says="add --overwrite to replace it")
    assert mine.read_text() == "the user's own table\n"
    metrics = (run / "metrics.jsonl").read_bytes()
    for target in (run / "metrics.jsonl", run / "summary.json.csv", run / "model" / "p.csv",
                   work / "other" / "p.csv"):
        if target.name == "summary.json.csv":
            target.write_text("x")  # an existing file in the run: never replaced
        refused(capsys, "predict", run, img, "--out", target, "--overwrite", says=str(target))
    assert (run / "metrics.jsonl").read_bytes() == metrics
    assert not (run / "model" / "p.csv").exists() and not (work / "other" / "p.csv").exists()
    code, err = cli(capsys, "predict", run, img, "--out", mine, "--overwrite")
    assert code == 0, err
    assert mine.read_text().startswith("id,label")
    code, err = cli(capsys, "predict", run, img, "--out", run / "preds.csv")  # new, in its run
    assert code == 0, err
    # an --out too long for the file system is said, not a traceback
    refused(capsys, "predict", run, img, "--out", work / ("y" * 300 + ".csv"),
            says="cannot be checked")


@pytest.mark.slow
def test_report_replaces_its_own_page_and_nothing_else(
        run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(2):
        code, err = cli(capsys, "report", run)
        assert code == 0, err
    mine = run.parent / "mine.html"
    mine.write_text("<html>the user's page</html>")
    refused(capsys, "report", run, "--out", mine, says="add --overwrite")
    assert mine.read_text() == "<html>the user's page</html>"
    refused(capsys, "report", run, "--out", run / "summary.json", "--overwrite",
            says="never replaces a run's own files")
    refused(capsys, "report", run, "--out", run.parent / "other" / "report.html",
            says="is inside")
    (run / "report.html").write_text("<html>the user's page, in the run</html>")
    refused(capsys, "report", run, says="not an HTML page tlkit wrote")
    code, err = cli(capsys, "report", run, "--out", mine, "--overwrite")
    assert code == 0, err
    assert file_kind(mine) == "page"


def test_rank_probe_and_advise_check_their_files_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: --json and --html wrote anywhere (the config itself included), after minutes of
    work."""
    import tlkit.select.advise
    import tlkit.diagnose.probe_run
    import tlkit.diagnose.rank

    def no_work(*a: object, **k: object) -> None:
        raise AssertionError("the work started before the refusal")

    for module, name in ((tlkit.diagnose.rank, "rank"), (tlkit.diagnose.probe_run, "probe_run"),
                         (tlkit.select.advise, "gather")):
        monkeypatch.setattr(module, name, no_work)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG)
    mine = tmp_path / "mine.json"
    mine.write_text('{"mine": true}\n')
    page = tmp_path / "mine.html"
    page.write_text("<html>mine</html>")
    commands = {"rank": ["rank", cfg, "--backbones", "timm:test_efficientnet"],
                "probe": ["probe", cfg], "advise": ["advise", cfg]}
    for name, command in commands.items():
        refused(capsys, *command, "--json", mine, says="add --overwrite")
        refused(capsys, *command, "--json", cfg, "--overwrite", says="an input of this command")
    refused(capsys, *commands["rank"], "--html", page, says="add --overwrite")
    refused(capsys, *commands["rank"], "--html", cfg, "--overwrite", says="an input")
    (tmp_path / "link.json").symlink_to(cfg)  # the config by another name
    refused(capsys, *commands["probe"], "--json", tmp_path / "link.json", "--overwrite",
            says="an input of this command")
    assert mine.read_text() == '{"mine": true}\n' and cfg.read_text() == CONFIG


def test_fit_and_compare_refuse_every_other_kind_of_tlkit_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG)
    for kind in ("compare", "pretrain", "export", "run"):
        claim(tmp_path / kind, kind)
        (tmp_path / kind / "kept.txt").write_text(kind)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for command, own in (("fit", "run"), ("compare", "compare")):
        for kind in ("compare", "pretrain", "export", "run"):
            if kind != own:
                refused(capsys, command, cfg, "--out", tmp_path / kind,
                        says=f"not a tlkit {'run directory' if own == 'run' else 'compare folder'}")
        refused(capsys, command, cfg, "--out", afile, says="is a file")
        refused(capsys, command, cfg, "--out", cfg, says="an input of this command")
        refused(capsys, command, cfg, "--out", tmp_path / "run" / "sub", says="is inside")
    for kind in ("compare", "pretrain", "export", "run"):
        assert (tmp_path / kind / "kept.txt").read_text() == kind
    assert afile.read_text() == "mine"


def test_pretrain_out_a_file_or_a_run_is_a_user_error_and_a_leftover_start_is_taken(
        made: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: --out EXISTING_FILE and --out RUN --resume were tracebacks (exit 1); a killed
    pretraining's empty checkpoints/ blocked a rerun with or without --resume."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG + "adaptation:\n  target:\n    source: nowhere.csv\n")
    afile = tmp_path / "afile"
    afile.write_text("mine")
    run = made / "run"
    before = sha256s(run)
    refused(capsys, "pretrain", cfg, "--out", afile, says="is a file")
    for extra in ([], ["--resume"]):
        refused(capsys, "pretrain", cfg, "--out", run, *extra,
                says="a tlkit run directory, not a tlkit pretraining folder")
    assert sha256s(run) == before and afile.read_text() == "mine"
    # its own folder, left by a pretraining killed before its first checkpoint (or by an older
    # tlkit: checkpoints/ alone): taken, with or without --resume
    from tlkit.adapt.pretrain import pretrain
    from tlkit.config import load_config

    for name in ("marked", "older"):
        left = tmp_path / name
        (left / "checkpoints").mkdir(parents=True)
        if name == "marked":
            claim(left, "pretrain")
        for resume in (False, True):
            with pytest.raises(UserError) as e:  # past the output rule: the data is missing
                pretrain(load_config(str(cfg), []), left, resume=resume)
            assert "nowhere.csv" in str(e.value), str(e.value)


def test_the_api_follows_the_same_rule(made: Path, tmp_path: Path) -> None:
    import tlkit

    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG)
    claim(tmp_path / "cmp", "compare")
    with pytest.raises(UserError, match="not a tlkit run directory"):
        tlkit.fit(str(cfg), out=tmp_path / "cmp", progress=False)
    with pytest.raises(UserError, match="an input of this command"):
        tlkit.fit(str(cfg), out=cfg, progress=False)
    run = tlkit.load(made / "run")
    mine = tmp_path / "mine.html"
    mine.write_text("<html>mine</html>")
    with pytest.raises(UserError, match="overwrite=True"):
        run.report(mine)
    with pytest.raises(UserError, match="never replaces a run's own files"):
        run.report(made / "run" / "metrics.jsonl", overwrite=True)
    assert mine.read_text() == "<html>mine</html>"


# ==================================================================================================
# acceptance: a tree of user files, every writing command at it, into it, at another run
# ==================================================================================================


def users_tree(root: Path) -> Path:
    """A user's project: files of every ending the commands write, a folder of their own."""
    (root / "data" / "imgs").mkdir(parents=True)
    image(root / "data" / "imgs" / "a.png")
    (root / "data" / "reviews.csv").write_text("image\nimgs/a.png\n")
    for name in ("notes.csv", "notes.jsonl", "notes.parquet", "page.html", "result.json",
                 "model.onnx", "model.pt", "model.onnx.json", "model.tokenizer/vocab.txt",
                 "hf/config.json", "README.md"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"the user's {name}\n")
    return root


@pytest.mark.slow  # ~100 refusals, each before any work; the module's run
def test_no_command_changes_a_users_files_or_another_run(
        run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = run.parent
    tree = users_tree(work / "project")
    other = work / "other"
    cfg = work / "c.yaml"
    before = {"tree": sha256s(tree), "other": sha256s(other), "run": sha256s(run)}
    img = tree / "data" / "imgs" / "a.png"
    # at it, into it (its files and folders), at another run and into it
    folders = [tree, tree / "hf", tree / "data", tree / "model.tokenizer", other,
               other / "model", other / "export"]
    files = [tree / n for n in ("notes.csv", "notes.jsonl", "notes.parquet", "page.html",
                                "result.json", "model.onnx", "model.pt", "README.md")]
    files += [tree / "data" / "reviews.csv", other / "metrics.jsonl", other / "summary.json",
              other / "config.yaml", other / "new.csv", other / "report.html",
              other / "model" / "model.safetensors"]
    commands: list[list[object]] = []
    for t in folders + files:
        # (another seed: `fit --out OTHER --resume` with OTHER's own config is a resume)
        commands += [["fit", cfg, "--out", t, "--resume", "--set", "transfer_config.seed=7"],
                     ["compare", cfg, "--out", t, "--resume"],
                     ["pretrain", cfg, "--out", t, "--resume"],
                     ["report", run, "--out", t]]
        commands += [["export", run, "--format", f, "--out", t]
                     for f in ("onnx", "torchscript", "hf", "timm", "peft")]
        commands += [["predict", run, img, "--out", t],
                     ["predict", run, "--data", tree / "data" / "reviews.csv", "--out", t],
                     ["rank", cfg, "--backbones", "timm:test_efficientnet", "--json", t],
                     ["rank", cfg, "--backbones", "timm:test_efficientnet", "--html", t],
                     ["probe", cfg, "--json", t], ["advise", cfg, "--json", t]]
    # --overwrite reaches a file the user names, never an input or a run's files
    reviews = tree / "data" / "reviews.csv"
    commands += [["predict", run, "--data", reviews, "--out", reviews, "--overwrite"],
                 ["probe", cfg, "--json", cfg, "--overwrite"],
                 ["advise", cfg, "--json", cfg, "--overwrite"],
                 ["rank", cfg, "--backbones", "timm:test_efficientnet", "--html", cfg,
                  "--overwrite"]]
    for t in [other / "metrics.jsonl", other / "summary.json", run / "metrics.jsonl",
              run / "summary.json", run / "config.yaml"]:
        commands += [["predict", run, img, "--out", t, "--overwrite"],
                     ["report", run, "--out", t, "--overwrite"],
                     ["export", run, "--format", "onnx", "--out", t, "--overwrite"],
                     ["probe", cfg, "--json", t, "--overwrite"]]
    assert len(commands) == 354
    for command in commands:
        code, err = cli(capsys, *command)
        assert code == 2, (command, err[-1500:])
        error_line(err)  # one message, no traceback
    after = {"tree": sha256s(tree), "other": sha256s(other), "run": sha256s(run)}
    assert after == before
