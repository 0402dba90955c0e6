"""Same data, same model: labels and cells read one way whatever Python's hash seed (a number
written two ways is refused, ``None`` / ``NA`` cells are text), the same fit bitwise equal under
two hash seeds, and ``--resume`` refused on other data. Each case is in docs/reliability.md."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from user_runs import checksum, cli, default_config, error_line


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))


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
    cfg = default_config(tmp_path, str(tmp_path / "d.csv"), data="  test_fraction: 0.2\n")
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
    cfg = default_config(tmp_path, str(table), data="  test_fraction: 0.2\n")
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
