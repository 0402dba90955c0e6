"""A labelled target-domain test set (``adaptation.target.test``): read as ``data.test`` is,
measured as the source's test split is (summary.json's ``target_test``, with intervals), and
named in every place that shows the numbers; without one, an adapted run names its test split
the source domain's. A bad one exits 2 with one message, writing nothing into the run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from user_runs import checksum, cli, config, error_line, image_table

from tlkit.config import validate
from tlkit.errors import UserError


def _adapted(tmp: Path, method: str = "adabn", target_test: bool = True,
             tc: str = "") -> Path:
    """A random timm test_efficientnet trained one epoch on 90 images of two classes, with a
    target domain of 30 other images (the pool, unlabelled) and their labelled copy as the
    target test set."""
    source = image_table(tmp, 90, lambda i: "ab"[i % 2], "source.csv")
    (tmp / "target").mkdir(exist_ok=True)
    test = image_table(tmp / "target", 30, lambda i: "ab"[i % 2], "test.csv")
    given = f", test: {test}" if target_test else ""
    cfg = config(tmp, str(source), limit=None, tc=tc, name=f"{method}.yaml")
    cfg.write_text(cfg.read_text()
                   + f"adaptation:\n  method: {method}\n"
                   f"  target: {{source: {tmp / 'target' / 'imgs'}, image_size: 32{given}}}\n"
                   "diagnostics: {sample: 50, check_preprocessing: 'off'}\n")
    return cfg


@pytest.fixture(scope="module")
def adapted_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """An AdaBN run given a target test set: (config, run directory, its log)."""
    tmp = tmp_path_factory.mktemp("target_test")
    cfg = _adapted(tmp)
    from tlkit.cli import main

    assert main(["fit", str(cfg), "--out", str(tmp / "run")]) == 0
    return cfg, tmp / "run", (tmp / "run" / "train.log").read_text()  # the lines fit said


@pytest.mark.slow  # a fit of a few seconds, shared by the module
def test_the_target_test_set_is_measured_with_intervals_and_named_everywhere(
        adapted_run: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    cfg, run, log = adapted_run
    s = json.loads((run / "summary.json").read_text())
    t = s["target_test"]
    assert t["n"] == 30 and 0 <= t["accuracy"] <= 1 and set(t) >= set(s["test"])
    low, high = t["intervals"]["accuracy"]
    assert low <= t["accuracy"] <= high and t["intervals"]["resamples"] == 1000
    assert "f1_macro" in t["intervals"]
    assert s["test"]["accuracy"] is not None  # the source's section is kept, as it was
    assert (s["test_domain"], s["model_domain"]) == ("source", "target")
    assert s["data"]["origins"]["target_test"].endswith("test.csv")
    # the same examples through `tlkit evaluate --data`, which is unchanged
    from tlkit.cli import main

    assert main(["evaluate", str(run), "--data", str(cfg.parent / "target" / "test.csv")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accuracy"] == pytest.approx(t["accuracy"]) and out["n"] == 30
    # the closing lines, the log, the model card and the report name each domain
    assert "[tlkit] source domain test {" in log and "[tlkit] target domain test {" in log
    assert "95% intervals: accuracy" in log and "meant for the target domain" in log
    assert "evaluating on the source domain test split" in log
    card = (run / "README.md").read_text()
    assert "| source domain test | accuracy |" in card
    assert f"| target domain test | accuracy | {t['accuracy']:.4f} | {low:.4f} to {high:.4f} |" \
        in card
    assert "Made for inputs of the target domain" in card
    page = (run / "report.html").read_text()
    assert "Target domain test" in page and "source domain test accuracy" in page


@pytest.mark.slow  # a fit: a few seconds
def test_without_a_target_test_set_the_test_split_is_named_the_source_domains(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _adapted(tmp_path, target_test=False)
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run", "--no-report")
    assert code == 0, err
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (s["test_domain"], s["model_domain"]) == ("source", "target")
    assert "target_test" not in s and s["test"]["accuracy"] is not None
    assert "[tlkit] source domain test {" in err and "[tlkit] test {" not in err
    assert "meant for the target domain" in err and "adaptation.target.test" in err
    card = (tmp_path / "run" / "README.md").read_text()
    assert "| source domain test | accuracy |" in card and "| test |" not in card
    assert "meant for the target domain" in card


@pytest.mark.slow  # a fit: a few seconds
def test_a_run_that_only_measures_the_target_is_labelled_as_before(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _adapted(tmp_path, method="none", target_test=False)
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run", "--no-report")
    assert code == 0, err
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert not {"test_domain", "model_domain", "target_test"} & set(s)
    assert "[tlkit] test {" in err and "domain" not in err
    assert "| test | accuracy |" in (tmp_path / "run" / "README.md").read_text()


def _break(test: Path, how: str) -> None:
    if how == "missing file":
        test.unlink()
    elif how == "wrong columns":
        test.write_text(test.read_text().replace("path,label", "path,kind"))
    elif how == "a label not among the classes":
        test.write_text(test.read_text() + "imgs/0.png,c\n")
    elif how == "texts for an image model":
        test.write_text("text,label\na review,a\n")


BROKEN = {"missing file": "adaptation.target.test '.*test.csv': no such file or folder",
          "wrong columns": "test.csv has no label column .* columns are: path, kind. Set "
                           "adaptation.target.label_column",
          "a label not among the classes": "adaptation.target.test .*test.csv holds the label "
                                           "'c' \\(1 row\\), which the training source",
          "texts for an image model": "adaptation.target.test .*test.csv is text data but "
                                      "data.source is image; give a test set of the same kind"}


@pytest.mark.slow  # reads the data of a fit
@pytest.mark.parametrize("how", list(BROKEN))
def test_a_bad_target_test_set_exits_2_and_leaves_the_run_as_it_was(
        adapted_run: tuple[Path, Path, str], how: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg, run, _ = adapted_run
    test = cfg.parent / "target" / "test.csv"
    kept = tmp_path / "test.csv"
    shutil.copy(test, kept)
    before = checksum(run, but=("train.log",))
    try:
        _break(test, how)
        for out, extra in ((run, ["--resume"]), (tmp_path / "new", [])):
            code, err = cli(capsys, "fit", cfg, "--out", out, *extra)
            assert code == 2, err
            assert re.search(BROKEN[how], error_line(err)), error_line(err)
        assert checksum(run, but=("train.log",)) == before
    finally:
        shutil.copy(kept, test)


def test_freeze_strategy_auto_reads_the_target_test_set_before_its_trials(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _adapted(tmp_path, tc="  auto_budget: 2\n")
    cfg.write_text(cfg.read_text().replace("freeze_strategy: none", "freeze_strategy: auto"))
    _break(tmp_path / "target" / "test.csv", "a label not among the classes")
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run")
    assert code == 2 and re.search(BROKEN["a label not among the classes"], error_line(err))
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_the_target_test_set_is_read_with_the_models_task() -> None:
    raw = {"transfer_config": {"source_model": "mobilenetv2"},
           "data": {"source": "fashion_mnist", "task": "multi_label"},
           "adaptation": {"target": {"source": "digits", "test": "t.csv"}}}
    with pytest.raises(UserError, match="set adaptation.target.task: multi_label"):
        validate(raw)
    raw["adaptation"]["target"]["task"] = "multi_label"  # type: ignore[index]
    assert validate(raw).adaptation.target.test == "t.csv"  # type: ignore[union-attr]


@pytest.mark.parametrize("how", ["the same path", "a byte-identical copy"])
def test_a_target_test_set_that_is_the_source_data_is_refused(
        tmp_path: Path, how: str, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _adapted(tmp_path)
    source = tmp_path / "source.csv"
    test = tmp_path / "target" / "test.csv"
    if how == "the same path":
        cfg.write_text(cfg.read_text().replace(f"test: {test}", f"test: {source}"))
    else:
        shutil.copy(source, test)
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run")
    assert code == 2, err
    line = error_line(err)
    assert "data.source and adaptation.target.test" in line
    assert "labelled rows of the target domain" in line and "allow_overlap" in line
    assert not (tmp_path / "run").exists()  # refused before anything was written
    code, err = cli(capsys, "plan", cfg)
    assert code == 2 and "adaptation.target.test" in error_line(err)
