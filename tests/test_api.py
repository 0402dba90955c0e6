"""The Python API (docs/api.md): its example runs as written (on a tiny BERT here, on the
packaged MiniLM in the marked test), data given as DataFrames and datasets.Datasets, and
`import tlkit` stays light."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def _example(model: str, out: Path) -> str:
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert code is not None, "docs/api.md has a python example"
    text = code.group(1)
    assert '"minilm-l6"' in text and '"runs/api_example"' in text
    return text.replace('"minilm-l6"', json.dumps(model)).replace('"runs/api_example"',
                                                                  json.dumps(str(out)))


def _run_example(model: str, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TLKIT_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", _example(model, tmp_path / "run")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "run" / "report.html").is_file()
    assert (tmp_path / "run" / "README.md").is_file()
    assert "label" in r.stdout and "tlkit.Run(" in r.stdout
    cfg = (tmp_path / "run" / "config.yaml").read_text()
    assert str(tmp_path / "cache" / "frames") in cfg  # the DataFrame's rows, where it says


def test_import_tlkit_is_light_and_exports_only_the_public_names() -> None:
    r = subprocess.run([sys.executable, "-c", "import sys, tlkit; print('torch' in sys.modules);"
                        " print(sorted(tlkit.__all__)); print(callable(tlkit.fit) and callable(tlkit.distill))"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0] == "False" and lines[1] == "['Run', '__version__', 'distill', 'fit', 'load']"
    assert lines[2] == "True"


@pytest.mark.slow
def test_the_docs_example_runs_on_a_tiny_bert(tiny_bert_dir: Path, tmp_path: Path) -> None:
    _run_example(f"hf:{tiny_bert_dir}", tmp_path)


@pytest.mark.slow
@pytest.mark.packaged
def test_the_docs_example_runs_as_written_on_the_packaged_minilm(tmp_path: Path) -> None:
    _run_example("minilm-l6", tmp_path)


@pytest.mark.slow
def test_fit_takes_a_datasets_dataset_and_a_save_to_disk_folder(tiny_bert_dir: Path,
                                                                tmp_path: Path,
                                                                monkeypatch) -> None:
    datasets = pytest.importorskip("datasets")
    import tlkit

    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))
    words = ["great", "awful", "fine", "dull"]
    texts = [f"the film was {words[i % 4]}" for i in range(80)]
    labels = [0 if i % 4 in (1, 3) else 1 for i in range(80)]
    ds = datasets.Dataset.from_dict(
        {"text": texts, "label": labels},
        features=datasets.Features({"text": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["neg", "pos"])}))
    ds.save_to_disk(str(tmp_path / "saved"))
    tc = {"source_model": f"hf:{tiny_bert_dir}", "freeze_strategy": "all_frozen", "epochs": 1}
    a = tlkit.fit({"transfer_config": tc, "data": {"source": ds}}, out=tmp_path / "a",
                  progress=False)
    b = tlkit.fit({"transfer_config": tc, "data": {"source": str(tmp_path / "saved")}},
                  out=tmp_path / "b", progress=False)
    assert json.loads((tmp_path / "a" / "data.json").read_text())["classes"] == ["neg", "pos"]
    # the same rows: the same cached file, the same split
    assert a.summary["data"]["sizes"] == b.summary["data"]["sizes"]
    preds = a.predict(["the film was great"])
    assert list(preds.columns) == ["input", "label", "p_neg", "p_pos"]
    assert tlkit.load(tmp_path / "b").evaluate("test")["n"] == b.summary["data"]["sizes"]["test"]


def test_fit_with_baseline_refuses_a_config_without_a_test_split_before_training(
        tiny_bert_dir: Path, tmp_path: Path) -> None:
    """baseline=True is `tlkit fit --baseline`: a verdict it cannot give (no test split to
    compare on) is refused before anything trains (before: the fit trained, then failed)."""
    import pandas as pd

    import tlkit
    from tlkit.errors import UserError

    frame = pd.DataFrame({"text": [f"{w} film number {i}" for i in range(20)
                                   for w in ("good",)] + [f"bad film number {i}"
                                                          for i in range(20)],
                          "label": ["pos"] * 20 + ["neg"] * 20})
    config = {"transfer_config": {"source_model": f"hf:{tiny_bert_dir}",
                                  "freeze_strategy": "all_frozen", "epochs": 1},
              "data": {"source": frame, "test_fraction": 0},
              "diagnostics": {"baselines": ["classical"]}}
    with pytest.raises(UserError, match="--baseline compares test predictions"):
        tlkit.fit(config, out=tmp_path / "run", progress=False, baseline=True)
    assert not (tmp_path / "run").exists()
