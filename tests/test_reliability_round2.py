"""Reliability, round two (issue 18): never touch a user's files, never trust a run's own files,
same data -> same model. Each case is in docs/reliability.md (R2 there).

Fits run in this process through ``tlkit.cli.main``, as in tests/test_reliability.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tlkit.cli import main
from tlkit.rundir import MARKER


def config(tmp: Path, source: str = "digits", *, tc: str = "", data: str = "",
           name: str = "c.yaml", strategy: str = "none") -> Path:
    p = tmp / name
    p.write_text(
        "transfer_config:\n"
        "  source_model: timm:test_efficientnet\n"
        "  pretrained_weights: none\n"
        f"  freeze_strategy: {strategy}\n"
        "  epochs: 1\n  batch_size: 16\n  min_steps: 0\n  cache: {disk: false}\n"
        f"{tc}"
        "data:\n"
        f"  source: {source}\n"
        "  image_size: 32\n  limit: 120\n"
        f"{data}")
    return p


def cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if ": error: " in x]
    assert lines, f"no error message in:\n{err}"
    assert "Traceback" not in err
    return lines[-1]


def checksum(folder: Path, but: tuple[str, ...] = ()) -> str:
    """Every path under ``folder`` with its bytes (and nothing else): equal digests mean the
    folder is byte-for-byte the same (``but``: names left out)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.name in but:
            continue
        h.update(str(p.relative_to(folder)).encode())
        h.update(p.read_bytes() if p.is_file() else b"<dir>")
    return h.hexdigest()


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))


def users_folder(path: Path) -> Path:
    """A project folder of the user's own, holding the file names a run directory uses."""
    (path / "model").mkdir(parents=True)
    (path / "model" / "my_weights.bin").write_bytes(b"the user's own weights")
    (path / "config.yaml").write_text("# my commented config\ntransfer_config: {}\n")
    for name in ("metrics.jsonl", "plan.txt", "report.html", "summary.json"):
        (path / name).write_text(f"the user's {name}\n")
    return path


# ==================================================================================================
# 1. Never touch a user's files
# ==================================================================================================


def test_fit_into_a_users_folder_is_refused_and_leaves_it_byte_for_byte_unchanged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    mine = users_folder(tmp_path / "mine")
    before = checksum(mine)
    for extra in ([], ["--resume"], ["--baseline"], ["--tensorboard"]):
        code, err = cli(capsys, "fit", cfg, "--out", mine, *extra)
        assert code == 2, err
        assert "tlkit did not create" in error_line(err) and "choose another --out" in err
        assert checksum(mine) == before, extra


def test_fit_with_out_dot_in_a_project_folder_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    project = users_folder(tmp_path / "project")
    cfg = config(project, name="train.yaml")
    before = checksum(project)
    monkeypatch.chdir(project)
    code, err = cli(capsys, "fit", "train.yaml", "--out", ".")
    assert code == 2 and "tlkit did not create" in error_line(err)
    assert checksum(project) == before
    assert cfg.is_file()


@pytest.mark.slow  # a fit: a few seconds
def test_an_empty_folder_becomes_a_marked_run_directory_that_resume_accepts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    out = tmp_path / "empty"
    out.mkdir()
    code, err = cli(capsys, "fit", cfg, "--out", out, "--no-report")
    assert code == 0, err
    assert (out / MARKER).is_file() and (out / "summary.json").is_file()
    code, err = cli(capsys, "fit", cfg, "--out", out)  # a finished run: --resume or elsewhere
    assert code == 2 and "already holds a run" in error_line(err)


def test_compare_into_a_users_folder_is_refused_before_measuring_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    mine = users_folder(tmp_path / "mine")
    before = checksum(mine)
    for extra in ([], ["--resume"]):
        code, err = cli(capsys, "compare", cfg, "--out", mine, *extra)
        assert code == 2 and "tlkit did not create" in error_line(err)
        assert checksum(mine) == before


# ==================================================================================================
# 2. Images whose size exhausts memory
# ==================================================================================================


def image_folder(root: Path, per_class: int = 20) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, level in (("dark", 40), ("light", 200)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            px = np.clip(rng.normal(level, 20, (12, 12)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / label / f"{i:02d}.png")
    return root


def strip_png(path: Path, width: int = 200_000, height: int = 1) -> Path:
    """A 1 x 200,000 PNG: a few hundred bytes that passes PIL's decompression-bomb check."""
    from PIL import Image

    Image.new("L", (width, height), 128).save(path, optimize=True)
    assert path.stat().st_size < 2000
    return path


@pytest.mark.slow  # two fits: a few seconds each
def test_an_image_of_extreme_aspect_ratio_is_a_bad_image_in_fit_and_in_predict(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = image_folder(tmp_path / "imgs")
    strip = strip_png(folder / "dark" / "strip.png")
    cfg = config(tmp_path, str(folder), data="  test_fraction: 0.2\n").read_text()
    (tmp_path / "skip.yaml").write_text(cfg.replace("  limit: 120\n", ""))
    code, err = cli(capsys, "fit", tmp_path / "skip.yaml", "--out", tmp_path / "run",
                    "--no-report")
    assert code == 0, err
    import json

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped_images"] == 1
    (tmp_path / "error.yaml").write_text(cfg.replace("  limit: 120\n", "  on_bad_image: error\n"))
    code, err = cli(capsys, "fit", tmp_path / "error.yaml", "--out", tmp_path / "run2")
    assert code == 2 and "strip.png" in err and "aspect ratio" in error_line(err)
    code, err = cli(capsys, "predict", tmp_path / "run", strip)
    assert code == 2 and "aspect ratio" in error_line(err)


def test_the_size_bounds_name_what_is_wrong() -> None:
    from tlkit.data.images import MAX_PIXELS, size_problem

    assert size_problem(224, 224) is None and size_problem(4000, 3000) is None
    assert size_problem(12_000, 1_000) is None  # a 12:1 panorama
    assert "aspect ratio" in (size_problem(1, 200_000) or "")
    assert "over the" in (size_problem(20_000, 20_000) or "")
    assert size_problem(MAX_PIXELS // 10_000, 10_000) is None


# ==================================================================================================
# 5. Same data, same model; 6. strings that are not empty
# ==================================================================================================


def test_one_number_written_two_ways_is_refused_naming_both(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tlkit.config import DataConfig
    from tlkit.data import load_source
    from tlkit.errors import UserError

    (tmp_path / "t.csv").write_text("text,label\n" + "".join(
        f"text {i},{lab}\n" for i, lab in enumerate(["1", "1.0", "2", "2", "1", "2"])))
    with pytest.raises(UserError, match=r"labels '1' and '1.0': one number written 2 ways"):
        load_source(DataConfig(source=str(tmp_path / "t.csv")))
    # JSON numbers 1 and 1.0 are one label already
    (tmp_path / "t.jsonl").write_text("".join(
        f'{{"text": "t {i}", "label": {lab}}}\n' for i, lab in enumerate(["1", "1.0", "2"])))
    data = load_source(DataConfig(source=str(tmp_path / "t.jsonl")))
    assert data.classes == ["1", "2"]


def test_class_order_is_a_pure_function_of_the_names() -> None:
    import itertools

    from tlkit.data.targets import sort_classes

    names = ["10", "9", "1e1", "b", "a"]
    orders = {tuple(sort_classes(set(p))) for p in itertools.permutations(names[:3])}
    assert orders == {("9", "10", "1e1")}  # 10 and 1e1 tie as numbers: ordered as text
    assert sort_classes({"b", "a", "10"}) == ["10", "a", "b"]


def test_cells_reading_none_na_null_or_nan_are_texts_and_classes(tmp_path: Path) -> None:
    from tlkit.config import DataConfig
    from tlkit.data import load_source
    from tlkit.errors import UserError

    (tmp_path / "t.csv").write_text(
        "text,label\nNone,NA\nnull,None\nnan,NA\nNA,None\n1.50,NA\n007,None\n")
    data = load_source(DataConfig(source=str(tmp_path / "t.csv")))
    assert data.inputs == ["None", "null", "nan", "NA", "1.50", "007"]
    assert data.classes == ["NA", "None"] and data.targets.tolist() == [0, 1, 0, 1, 0, 1]
    (tmp_path / "gap.csv").write_text("text,label\nfine,a\n,b\nok,\n")
    with pytest.raises(UserError, match=r"column 'label' .* is empty in 1 row\(s\) \(data rows 3\)"):
        load_source(DataConfig(source=str(tmp_path / "gap.csv")))


@pytest.mark.slow  # two fits, each in a fresh interpreter: about 20 s
def test_the_same_fit_under_two_hash_seeds_is_bitwise_equal(tmp_path: Path) -> None:
    """Labels that are text (their set order follows Python's hash seed) and a table whose
    rows are images: weights, metrics and summary are equal bit for bit under
    PYTHONHASHSEED 0 and 3."""
    import os
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = ["image,label"]
    for i in range(60):
        label = ["zeta", "alpha", "mid"][i % 3]
        px = np.clip(rng.normal(60 + 60 * (i % 3), 30, (12, 12)), 0, 255).astype(np.uint8)
        Image.fromarray(px).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{label}")
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    cfg = config(tmp_path, str(tmp_path / "d.csv"), data="  test_fraction: 0.2\n")
    digests = []
    for seed in ("0", "3"):
        out = tmp_path / f"run{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed, "HF_HUB_OFFLINE": "1",
               "TLKIT_CACHE": str(tmp_path / f"cache{seed}")}
        r = subprocess.run([sys.executable, "-m", "tlkit.cli", "fit", str(cfg), "--out", str(out),
                            "--no-report"], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        h = hashlib.sha256()
        for name in ("model/model.safetensors", "predictions.npz"):
            h.update((out / name).read_bytes())
        import json

        for line in (out / "metrics.jsonl").read_text().splitlines():  # all but the seconds
            h.update(json.dumps({k: v for k, v in json.loads(line).items() if k != "seconds"},
                                sort_keys=True).encode())

        summary = json.loads((out / "summary.json").read_text())
        for volatile in ("total_seconds", "train_seconds"):
            summary.pop(volatile, None)
        h.update(json.dumps({k: v for k, v in summary.items() if "seconds" not in k},
                            sort_keys=True).encode())
        digests.append(h.hexdigest())
    assert digests[0] == digests[1]


# ==================================================================================================
# 7. Silent config mistakes
# ==================================================================================================


def test_a_key_given_twice_is_refused_with_both_line_numbers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    cfg.write_text(cfg.read_text() + "transfer_config:\n  epochs: 50\n")
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run")
    assert code == 2
    line = error_line(err)
    assert "'transfer_config' is given twice" in line and "lines 1 and 13" in line
    assert not (tmp_path / "run").exists()
    cfg.write_text(config(tmp_path).read_text().replace("  epochs: 1\n",
                                                          "  epochs: 1\n  epochs: 2\n"))
    code, err = cli(capsys, "plan", cfg)
    assert code == 2 and "'epochs' is given twice" in error_line(err)


def test_a_warmup_longer_than_the_run_is_refused_before_the_model_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = cli(capsys, "fit", config(tmp_path, tc="  warmup_steps: 1e20\n"),
                    "--out", tmp_path / "a")
    assert code == 2 and "transfer_config.warmup_steps" in err and "Traceback" not in err
    code, err = cli(capsys, "fit", config(tmp_path, tc="  warmup_steps: 1e6\n"),
                    "--out", tmp_path / "a")
    assert code == 2 and "warmup_steps is 1,000,000, more than the run's" in error_line(err)
    code, err = cli(capsys, "fit", config(tmp_path, tc="  warmup_steps: 500\n"),
                    "--out", tmp_path / "b")
    assert code == 2
    line = error_line(err)
    assert "warmup_steps is 500, more than the run's" in line and "warmup_ratio" in line
    assert "loading backbone" not in err


# ==================================================================================================
# 4. --resume after the data changed
# ==================================================================================================


def _image_table(folder: Path, n: int, labels: tuple[str, ...] = ("a", "b")) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = ["image,label"]
    for i in range(n):
        label = labels[i % len(labels)]
        px = np.clip(rng.normal(60 + 40 * (i % len(labels)), 30, (12, 12)), 0, 255)
        Image.fromarray(px.astype(np.uint8)).save(folder / f"{i}.png")
        rows.append(f"{i}.png,{label}")
    table = folder / "d.csv"
    table.write_text("\n".join(rows) + "\n")
    return table


@pytest.mark.slow  # a fit, then resumes: a few seconds
def test_resume_with_changed_data_is_refused_saying_what_changed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = _image_table(tmp_path, 40)
    cfg = config(tmp_path, str(table), data="  test_fraction: 0.2\n")
    cfg.write_text(cfg.read_text().replace("  limit: 120\n", ""))
    out = tmp_path / "run"
    code, err = cli(capsys, "fit", cfg, "--out", out, "--no-report")
    assert code == 0, err
    assert (out / "data.json").is_file()
    code, err = cli(capsys, "fit", cfg, "--out", out, "--resume", "--no-report")
    assert code == 0, err  # the same data: resumes (a finished run: nothing left to train)
    original = table.read_text()
    table.write_text(original + "".join(f"{i % 40}.png,{'ab'[i % 2]}\n" for i in range(10)))
    # the log records the attempt; everything else stays as it was
    before = checksum(out, but=("train.log",))
    code, err = cli(capsys, "fit", cfg, "--out", out, "--resume")
    assert code == 2
    line = error_line(err)
    assert "--resume with other data" in line and "examples, now" in line
    assert checksum(out, but=("train.log",)) == before
    table.write_text(original.replace("0.png,a", "0.png,c"))
    code, err = cli(capsys, "fit", cfg, "--out", out, "--resume")
    assert code == 2 and "new class(es) 'c'" in error_line(err)
    assert checksum(out, but=("train.log",)) == before


# ==================================================================================================
# 3. Never trust a run's own files
# ==================================================================================================


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    tmp = tmp_path_factory.mktemp("finished")
    old = os.environ.get("TLKIT_CACHE")
    os.environ["TLKIT_CACHE"] = str(tmp / "cache")
    try:
        code = main(["fit", str(config(tmp, strategy="all_frozen",
                                       data="  test_fraction: 0.2\n")),
                     "--out", str(tmp / "run"), "--no-report"])
    finally:
        if old is None:
            os.environ.pop("TLKIT_CACHE", None)
        else:
            os.environ["TLKIT_CACHE"] = old
    assert code == 0
    return tmp / "run"


def _edited(run: Path, dest: Path, edit: object) -> Path:
    import json
    import shutil

    shutil.copytree(run, dest)
    path = dest / "model" / "model.json"
    meta = json.loads(path.read_text())
    new = edit(meta) if callable(edit) else edit
    path.write_text(json.dumps(meta if new is None else new))
    return dest


def _set(keys: str, value: object):  # type: ignore[no-untyped-def]
    def edit(meta: dict) -> None:  # type: ignore[type-arg]
        *path, last = keys.split(".")
        node = meta
        for k in path:
            node = node[k]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return edit


EDITS = {
    "num_outputs a billion": (_set("head.num_outputs", 10**9), "head.num_outputs"),
    "num_outputs 7": (_set("head.num_outputs", 7), "head.num_outputs"),
    "head removed": (_set("head", KeyError), "head"),
    "classes shortened": (lambda m: m.__setitem__("classes", m["classes"][:3]), "classes"),
    "classes null": (_set("classes", None), "classes"),
    "a list": ([1, 2, 3], "not the model's description"),
    "null": (None, "not the model's description"),
    "unknown adapter": (_set("backbone.adapter", "keras"), "backbone.adapter"),
    "task bogus": (_set("task", "bogus"), "task"),
    "hidden size huge": (_set("head.hidden_size", 10**12), "head.hidden_size"),
    "unknown timm model": (_set("backbone.model_name", "no_such_net"), "cannot be built"),
}


@pytest.mark.slow  # one fit (module fixture), then a predict per edit: about 10 s in all
@pytest.mark.parametrize("case", sorted(EDITS))
def test_an_edited_model_json_exits_2_naming_the_field(
        case: str, finished_run: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    edit, named = EDITS[case]
    if case == "null":
        run = _edited(finished_run, tmp_path / "run", lambda m: None)
        (run / "model" / "model.json").write_text("null")
    else:
        run = _edited(finished_run, tmp_path / "run", edit)
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (12, 12), 128).save(image)
    for command in (["predict", run, image], ["evaluate", run]):
        code, err = cli(capsys, *command)
        assert code == 2, (case, err[-2000:])
        line = error_line(err)
        assert named in line and "model.json" in line, line


def test_checked_compares_a_transformer_config_with_the_weights(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from tlkit.errors import UserError
    from tlkit.model_json import checked

    tensors = {f"backbone.model.encoder.layer.{i}.attention.weight": torch.zeros(8, 8)
               for i in range(2)}
    tensors["backbone.model.embeddings.word_embeddings.weight"] = torch.zeros(50, 8)
    tensors["head.1.weight"] = torch.zeros(3, 8)
    weights = tmp_path / "model.safetensors"
    save_file(tensors, str(weights))
    meta = {"format": 1, "task": "single_label", "classes": ["a", "b", "c"],
            "backbone": {"adapter": "hf", "config": {"model_type": "bert", "num_hidden_layers": 2,
                                                     "hidden_size": 8, "vocab_size": 50}},
            "preprocessing": {"kind": "text", "tokenizer": "tokenizer", "max_length": 32},
            "head": {"type": "linear", "hidden_size": 256, "dropout": 0.1, "num_outputs": 3}}
    checked(meta, tmp_path / "model.json", weights)  # consistent: accepted
    for key, value, said in (("num_hidden_layers", 5000, "num_hidden_layers"),
                             ("num_hidden_layers", 4, "the weights hold 2 layers"),
                             ("hidden_size", 16, "hidden_size: 16"),
                             ("vocab_size", 10**9, "vocab_size")):
        bad = {**meta, "backbone": {"adapter": "hf",
                                    "config": {**meta["backbone"]["config"], key: value}}}
        with pytest.raises(UserError, match=said):
            checked(bad, tmp_path / "model.json", weights)


def _payload(x: float) -> dict:  # type: ignore[type-arg]
    import torch

    return {"model": {"w": torch.full((64,), x)}, "optimizer": {}, "state": {"epoch": 0},
            "rng": {}}


def test_a_checkpoint_that_changed_after_it_was_written_is_refused(tmp_path: Path) -> None:
    import json

    from tlkit.errors import UserError
    from tlkit.train.checkpoint import (load_checkpoint, save_checkpoint, sha256_of,
                                        sums_path)

    last = tmp_path / "last.pt"
    save_checkpoint(last, _payload(1.0))
    first = last.read_bytes()
    save_checkpoint(last, _payload(2.0))
    assert float(load_checkpoint(last)["model"]["w"][0]) == 2.0
    assert json.loads(sums_path(last).read_text())["sha256"] == [sha256_of(last)]
    # a crash after the record was written but before the rename: the previous file survives,
    # and the record (new and previous checksum) still matches it
    second = last.read_bytes()
    last.write_bytes(first)
    sums_path(last).write_text(json.dumps({"sha256": ["0" * 64, sha256_of(last)]}))
    assert float(load_checkpoint(last)["model"]["w"][0]) == 1.0
    # one byte changed inside the tensor data: torch would read it; the checksum refuses it
    last.write_bytes(second)
    save_checkpoint(last, _payload(2.0))
    data = bytearray(last.read_bytes())
    import struct

    at = data.find(struct.pack("<f", 2.0) * 4)
    assert at > 0
    data[at] ^= 0x01
    last.write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match the checksum recorded"):
        load_checkpoint(last)


@pytest.mark.slow  # a fit: a few seconds
def test_resume_from_an_edited_checkpoint_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    out = tmp_path / "run"
    code, err = cli(capsys, "fit", cfg, "--out", out, "--no-report")
    assert code == 0, err
    last = out / "checkpoints" / "last.pt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    before = checksum(out, but=("train.log",))
    code, err = cli(capsys, "fit", cfg, "--out", out, "--resume")
    assert code == 2 and "does not match the checksum" in error_line(err)
    assert checksum(out, but=("train.log",)) == before


# ==================================================================================================
# 8. Signals and read-only places
# ==================================================================================================


def _checkpoint_write_seen(run: Path, proc: object, timeout: float = 120) -> bool:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:  # type: ignore[attr-defined]
        ck = run / "checkpoints"
        if ck.is_dir() and any(f.name.startswith((".last.pt.tmp", ".best.safetensors.tmp"))
                               for f in ck.iterdir()):
            return True
        time.sleep(0.002)
    return False


@pytest.mark.slow  # two fits in fresh interpreters, each stopped mid-write: about 30 s
@pytest.mark.parametrize("sig,code,said", [("SIGINT", 130, "interrupted"),
                                           ("SIGTERM", 143, "terminated")])
def test_a_signal_during_a_checkpoint_write_ends_cleanly_and_leaves_no_temporary_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], sig: str, code: int,
        said: str) -> None:
    import os
    import signal
    import subprocess
    import sys

    from tlkit.files import LEFTOVER
    from tlkit.train.checkpoint import load_checkpoint

    cfg = config(tmp_path)
    cfg.write_text(cfg.read_text().replace("  epochs: 1\n", "  epochs: 4\n"))
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TLKIT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "tlkit.cli", "fit", str(cfg), "--out",
                             str(run), "--checkpoint-every", "1", "--no-report"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert _checkpoint_write_seen(run, proc), "no checkpoint write seen"
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-2000:]
    assert said in err and "internal error" not in err and "Traceback" not in err
    leftovers = [p.name for p in run.rglob("*") if LEFTOVER.match(p.name)]
    assert leftovers == []
    load_checkpoint(run / "checkpoints" / "last.pt")  # whole, and its checksum matches
    code2, err2 = cli(capsys, "fit", cfg, "--out", run, "--resume", "--no-report")
    assert code2 == 0, err2


@pytest.mark.slow  # a fit: a few seconds
def test_leftovers_of_a_killed_writer_are_removed_on_the_next_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tlkit.rundir import claim

    cfg = config(tmp_path)
    run = tmp_path / "run"
    claim(run, "run")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / ".last.pt.tmp4242").write_bytes(b"x" * 1000)  # a SIGKILL's leftover
    (run / ".summary.json.tmp77").write_text("{")
    (run / "model.tmp").mkdir()
    (run / "model.tmp" / "model.safetensors").write_bytes(b"half")
    (run / "notes.tmp1").write_text("a name that is not tlkit's pattern stays")
    code, err = cli(capsys, "fit", cfg, "--out", run, "--resume", "--no-report")
    assert code == 0, err
    assert "removed 3 temporary file(s)" in err
    assert not (run / "checkpoints" / ".last.pt.tmp4242").exists()
    assert not (run / ".summary.json.tmp77").exists() and not (run / "model.tmp").exists()
    assert (run / "notes.tmp1").is_file()


def test_a_signal_inside_an_atomic_write_waits_for_the_rename(tmp_path: Path) -> None:
    import os
    import signal

    from tlkit.files import atomic_write

    target = tmp_path / "f.txt"
    target.write_text("old")

    def write(tmp: Path) -> None:
        tmp.write_text("new")
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, write)
    assert target.read_text() == "new"  # the rename happened before the interrupt
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


@pytest.mark.slow  # uses the module's finished run
def test_report_and_export_in_a_read_only_place_say_so(
        finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    real_write_text = Path.write_text

    def read_only(self: Path, *a: object, **k: object) -> int:
        if str(self).startswith(str(run)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_write_text(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", read_only)
    code, err = cli(capsys, "report", run)
    assert code == 2 and "Read-only file system" in error_line(err) and "--out" in err
    code, err = cli(capsys, "report", run, "--out", tmp_path / "page.html")
    assert code == 0, err
    assert (tmp_path / "page.html").is_file()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).startswith(str(run))
                        else real_access(p, mode))
    code, err = cli(capsys, "export", run, "--format", "onnx")
    assert code == 2 and "read-only" in error_line(err) and "--out" in err


@pytest.mark.parametrize("text", ["[1, 2]", "{}", '{"chosen": "bogus", "settings": {}}', "{",
                                  "null"])
def test_an_edited_auto_record_is_refused_on_resume(tmp_path: Path, text: str) -> None:
    from tlkit.errors import UserError
    from tlkit.run.auto import recorded_choice

    record = tmp_path / "auto.json"
    record.write_text(text)
    with pytest.raises(UserError, match="auto.json cannot be read as freeze_strategy auto's"):
        recorded_choice(record)


def test_a_bare_off_is_read_as_the_word(tmp_path: Path) -> None:
    from tlkit.config import load_config

    cfg = config(tmp_path)
    cfg.write_text(cfg.read_text() + "diagnostics:\n  check_preprocessing: off\n")
    assert load_config(str(cfg)).diagnostics.check_preprocessing == "off"
