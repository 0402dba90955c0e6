"""Never trust a run's own files: an edited model.json, checkpoint or auto.json is refused
naming what is wrong, before anything is built from it; a run directory that cannot be written
says so and where else to write. Each case is in docs/reliability.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from user_runs import checksum, cli, default_config, error_line

from tlkit.cli import main


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    tmp = tmp_path_factory.mktemp("finished")
    old = os.environ.get("TLKIT_CACHE")
    os.environ["TLKIT_CACHE"] = str(tmp / "cache")
    try:
        code = main(["fit", str(default_config(tmp, strategy="all_frozen",
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
    from tlkit.outputs import sha256_of
    from tlkit.train.checkpoint import load_checkpoint, save_checkpoint, sums_path

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
    cfg = default_config(tmp_path)
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


@pytest.mark.parametrize("text", ["[1, 2]", "{}", '{"chosen": "bogus", "settings": {}}', "{",
                                  "null"])
def test_an_edited_auto_record_is_refused_on_resume(tmp_path: Path, text: str) -> None:
    from tlkit.errors import UserError
    from tlkit.select.record import recorded_choice

    record = tmp_path / "auto.json"
    record.write_text(text)
    with pytest.raises(UserError, match="auto.json cannot be read as freeze_strategy auto's"):
        recorded_choice(record)


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
