"""A run's summary.json read back (``tlkit.load``, predict, report, compare's kept runs): a
damaged file (not JSON, cut short, not an object, a field missing or of the wrong kind, the
calibration malformed) is a UserError naming the file, the field and the fix, never a traceback,
and predict never drops the calibration without a word."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

import tlkit
from tlkit.cli import main
from tlkit.errors import UserError

GOOD: dict[str, Any] = {
    "source_model": "timm:test_efficientnet", "strategy": "top_n_unfrozen",
    "task": "single_label",
    "data": {"source": "digits", "modality": "image", "task": "single_label", "num_classes": 10,
             "sizes": {"train": 72, "val": 8, "test": 180}, "own_test": False,
             "skipped_images": 0, "origins": {"train": "digits"}, "train_only_classes": []},
    "skipped_images": 0, "best_epoch": 0,
    "model_selection": {"on": "val_loss", "metric": "val_loss", "val_examples": 8},
    "epochs_run": 1, "stopped_early": False, "train_seconds": 5.06, "total_seconds": 17.72,
    "parameters": 101766, "trainable_parameters_last_phase": 48406,
    "val": {"loss": 2.29, "accuracy": 0.25, "f1_macro": 0.04, "per_class": {}},
    "test": {"loss": 2.30, "accuracy": 0.1, "f1_macro": 0.018, "per_class": {}},
    "preprocessing_findings": [{"severity": "info", "what": "small images", "fix": "-"}],
    "calibration": {"temperature": 0.22, "ece_before": 0.01},
    "scoring": {"temperature": 0.22, "fitted_on": "8 validation examples"},
}


def run_dir(tmp: Path, summary: Any, *, checkpoint: bool = False, raw: bool = False) -> Path:
    run = tmp / "run"
    run.mkdir()
    text = summary if raw else json.dumps(summary)
    (run / "summary.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    if checkpoint:
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.pt").write_bytes(b"a checkpoint")
    return run


def changed(**fields: Any) -> dict[str, Any]:
    """GOOD with ``fields`` replaced (dotted keys reach into a section; None drops the key)."""
    out = json.loads(json.dumps(GOOD))
    for dotted, value in fields.items():
        *parents, key = dotted.split("__")
        at = out
        for p in parents:
            at = at[p]
        if value is None:
            at.pop(key, None)
        else:
            at[key] = value
    return out


def test_a_good_summary_loads_with_fields_a_newer_tlkit_adds_and_without_a_test_split(
        tmp_path: Path) -> None:
    summary = changed(test=None, newer_field={"x": 1}, data__overlap={"val": 0})
    summary["test"] = None
    run = tlkit.load(run_dir(tmp_path, summary))
    assert run.summary == summary and "tlkit.Run(" in repr(run)


# what is written in place of summary.json -> the words the message must hold
DAMAGED: dict[str, tuple[Any, str]] = {
    "not JSON": (b"this is not json", "is not valid JSON"),
    "cut short": (json.dumps(GOOD)[:200].encode(), "is not valid JSON"),
    "empty": (b"", "is not valid JSON"),
    "not text": (b"\xff\xfe\x00garbage", "is not text"),
    "a list": (b"[1, 2, 3]", "holds a JSON list"),
    "a string": (b'"summary"', "holds a JSON str"),
    "no test": (changed(test=None), "field test: Field required (missing)"),
    "test as text": (changed(test="0.9"), "field test"),
    "a metric as text": (changed(test__accuracy="0.1"),
                         "field test: metric 'accuracy' is the text"),
    "val as a list": (changed(val=[0.2]), "field val"),
    "epochs as text": (changed(epochs_run="1"), "field epochs_run"),
    "parameters as a bool": (changed(parameters=True), "field parameters"),
    "seconds negative": (changed(total_seconds=-3), "field total_seconds"),
    "data as a list": (changed(data=["digits"]), "field data"),
    "a size as text": (changed(data__sizes__train="72"), "field data.sizes.train"),
    "task unknown": (changed(task="classification"), "field task"),
    "findings not a list": (changed(preprocessing_findings="none"),
                            "field preprocessing_findings"),
    "scoring as a list": (changed(scoring=[0.22]), "field scoring"),
    "scoring empty": (changed(scoring={}), "field scoring: holds neither a temperature"),
    "temperature as text": (changed(scoring__temperature="0.22"), "field scoring.temperature"),
    "temperature zero": (changed(scoring__temperature=0), "field scoring.temperature"),
    "temperature negative": (changed(scoring__temperature=-1.5), "field scoring.temperature"),
    "temperature NaN": (changed(scoring__temperature=math.nan), "field scoring.temperature"),
    "thresholds not a list": (changed(task="multi_label", scoring={"thresholds": "0.5"}),
                              "field scoring.thresholds"),
    "a threshold above 1": (changed(task="multi_label", data__num_classes=2,
                                    scoring={"thresholds": [0.5, 2.0]}),
                            "field scoring.thresholds.1"),
    "thresholds for other classes": (changed(task="multi_label", data__num_classes=3,
                                             scoring={"thresholds": [0.5, 0.4]}),
                                     "scoring.thresholds: 2 thresholds for 3 classes"),
    "multi-label without thresholds": (changed(task="multi_label"),
                                       "a multi_label run's scoring needs its thresholds"),
    "single-label without temperature": (changed(scoring={"thresholds": [0.5]}),
                                         "a single_label run's scoring needs its temperature"),
}


@pytest.mark.parametrize("what", list(DAMAGED))
def test_a_damaged_summary_is_a_user_error_at_load_naming_the_file_the_field_and_the_fix(
        what: str, tmp_path: Path) -> None:
    content, words = DAMAGED[what]
    raw = isinstance(content, bytes)
    run = run_dir(tmp_path, content, raw=raw)
    with pytest.raises(UserError) as got:
        tlkit.load(run)
    message = str(got.value)
    assert str(run / "summary.json") in message and words in message, message
    assert "restore the file from a backup" in message


def test_the_fix_is_fit_resume_where_the_last_checkpoint_is_still_there(tmp_path: Path) -> None:
    run = run_dir(tmp_path, b"{\"test\": {\"acc", checkpoint=True, raw=True)
    with pytest.raises(UserError, match=r"tlkit fit CONFIG --out .* --resume` to write it "
                                        r"again"):
        tlkit.load(run)


def test_a_summary_damaged_after_load_is_an_error_when_read_not_a_traceback(
        tmp_path: Path) -> None:
    run = run_dir(tmp_path, GOOD)
    loaded = tlkit.load(run)
    (run / "summary.json").write_text("[]")
    with pytest.raises(UserError, match="holds a JSON list"):
        loaded.summary  # noqa: B018 - the property reads the file


def test_the_report_of_a_damaged_summary_is_exit_2_naming_the_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = run_dir(tmp_path, changed(total_seconds="17.7"))
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "field total_seconds" in err and "Traceback" not in err


def test_calibration_malformed_in_a_summary_never_becomes_raw_probabilities() -> None:
    from tlkit.run.scoring import Calibration

    assert Calibration.of(GOOD, True).temperature == pytest.approx(0.22)
    assert Calibration.of(GOOD, False).temperature == 1.0  # --no-calibration: asked for
    assert Calibration.of(changed(scoring=None), True).temperature == 1.0  # none was fitted
    for bad in ([0.22], {"temperature": "hot"}, {"thresholds": "0.5"}, {},
                {"temperature": -1.0}):
        with pytest.raises(UserError, match="scoring section is damaged"):
            Calibration.of(changed(scoring=bad), True)


# --------------------------------------------------------------------------------------------------
# on a trained run: predict (the API, the command line, batch scoring)
# --------------------------------------------------------------------------------------------------

CFG = """\
transfer_config:
  source_model: timm:test_efficientnet
  pretrained_weights: none
  freeze_strategy: top_n_unfrozen
  top_n: 1
  epochs: 1
  batch_size: 16
  min_steps: 0
  device: cpu
  cache: {disk: false}
data:
  source: digits
  image_size: 32
  limit: 80
  test_fraction: 0.1
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("summary_run")
    mp = pytest.MonkeyPatch()
    mp.setenv("TLKIT_CACHE", str(tmp / "cache"))
    try:
        (tmp / "c.yaml").write_text(CFG)
        assert main(["fit", str(tmp / "c.yaml"), "--out", str(tmp / "run"), "--no-report"]) == 0
    finally:
        mp.undo()
    return tmp / "run"


def _image(tmp: Path) -> Path:
    import numpy as np
    from PIL import Image

    path = tmp / "digit.png"
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype("uint8")
                    ).save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["scoring as a list", "not JSON", "temperature as text"])
def test_predict_on_a_run_with_a_damaged_summary_is_an_error_not_raw_probabilities(
        damage: str, trained: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    image = _image(tmp_path)
    good = tlkit.load(run).predict([str(image)])
    content, words = DAMAGED[damage]
    s = json.loads((run / "summary.json").read_text())
    if isinstance(content, bytes):
        (run / "summary.json").write_bytes(content)
    else:  # the run's own summary with the same field damaged
        s["scoring"] = content["scoring"]
        (run / "summary.json").write_text(json.dumps(s))
    loaded = tlkit.Run.__new__(tlkit.Run)  # a Run loaded before the file was damaged
    loaded.path = run
    with pytest.raises(UserError, match="summary.json"):
        loaded.predict([str(image)])
    assert main(["predict", str(run), str(image)]) == 2
    err = capsys.readouterr().err
    assert "summary.json" in err and "Traceback" not in err
    csv = tmp_path / "in.csv"
    csv.write_text(f"image\n{image}\n")
    assert main(["predict", str(run), "--data", str(csv), "--out", str(tmp_path / "p.csv")]) == 2
    assert "summary.json" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()
    assert len(good) == 1


def test_the_report_of_a_run_without_a_test_split_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # data.test_fraction 0: summary.json's test is null (before: a traceback in the overview)
    run = run_dir(tmp_path, {**GOOD, "test": None})
    assert main(["report", str(run)]) == 0, capsys.readouterr().err
    assert (run / "report.html").is_file()
