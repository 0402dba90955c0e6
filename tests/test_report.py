"""The HTML report of a run (and the compare and rank pages): one self-contained file that a
browser opens without errors, with images that show something.

The browser test drives the system's headless Chromium (scripts/setup.sh installs the Debian
package) through the DevTools protocol: console errors, uncaught exceptions and failed loads are
collected while the page loads, then a screenshot is taken."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cli_runner import run_cli

from tlkit.report import write_compare_page, write_rank_page, write_report
from tlkit.report.rundata import load_run, parse_plan, plan_from_record

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

TINY = """\
transfer_config:
  source_model: timm:test_efficientnet
  pretrained_weights: none
  freeze_strategy: gradual
  unfreeze_schedule:
    - {epoch: 1, unfreeze: last_block}
    - {epoch: 2, unfreeze: all}
  head_lr: 1e-2
  backbone_lr: 3e-3
  warmup_steps: 3
  epochs: 3
  batch_size: 16
  early_stopping_patience: null
data:
  source: digits
  image_size: 32
  limit: 160
"""


# ------------------------------------------------------------------------ a DevTools client


class Chromium:
    """Headless Chromium on a DevTools websocket: one page, its events kept."""

    def __init__(self, width: int = 1200, height: int = 3000) -> None:
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="tlkit-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--no-first-run", "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.ws = connect(self._browser_url(), max_size=None, open_timeout=30)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width,
                  height=height, deviceScaleFactor=1, mobile=False)

    def _browser_url(self) -> str:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                return m.group(1)
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError("chromium did not open its DevTools port")

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def open(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            assert time.monotonic() < deadline, "the page did not finish loading in 60 s"
            self.events.append(json.loads(self.ws.recv(timeout=60)))

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", session=True, expression=expression,
                         returnByValue=True)["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, error log entries and failed loads."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p['type']}: {p.get('args')}")
            elif m == "Runtime.exceptionThrown":
                out.append(f"exception: {p.get('exceptionDetails', {}).get('text')}")
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif m == "Network.loadingFailed":
                out.append(f"load failed: {p.get('errorText')}")
        return out

    def screenshot(self) -> Image.Image:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:  # noqa: BLE001 - it may go before it answers
            pass
        self.ws.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def open_in_chromium(page: Path, width: int = 1200, height: int = 3000
                     ) -> tuple[list[str], list[Any], Image.Image]:
    """The page's problems, each image's (complete, natural width), and a screenshot."""
    browser = Chromium(width, height)
    try:
        browser.open(page.resolve().as_uri())
        images = browser.evaluate(
            "Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        return browser.problems(), images, browser.screenshot()
    finally:
        browser.close()


# ------------------------------------------------------------------------ checks of a page


def embedded_pngs(html: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")
            for b in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def assert_not_blank(image: Image.Image, what: str) -> None:
    assert np.asarray(image, dtype=np.float32).var() > 0, f"{what} is blank"


def assert_self_contained(html: str) -> None:
    refs = re.findall(r'(?:src|href)\s*=\s*["\']?\s*([^"\'\s>]+)', html, flags=re.I)
    remote = [r for r in refs if re.match(r"(?:https?:)?//", r, flags=re.I)]
    assert not remote, f"network references: {remote[:3]}"
    assert all(r.startswith(("data:", "#")) for r in refs), [r[:40] for r in refs
                                                              if not r.startswith(("data:", "#"))]
    assert "<script" not in html.lower()
    assert not re.search(r"@import|url\(\s*['\"]?https?:", html, flags=re.I)


def assert_opens_cleanly(page: Path) -> Image.Image:
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH (scripts/setup.sh installs the Debian package "
                    "chromium)")
    problems, images, shot = open_in_chromium(page)
    assert problems == [], problems
    assert images and all(done and width > 0 for done, width in images), images
    assert_not_blank(shot, "the screenshot")
    for i, png in enumerate(embedded_pngs(page.read_text())):
        assert_not_blank(png, f"image {i}")
    return shot


# ------------------------------------------------------------------------ a tiny run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-phase gradual run of a tiny random EfficientNet on digits; fit writes its
    report."""
    tmp = tmp_path_factory.mktemp("report")
    run = tmp / "run"
    cfg = tmp / "tiny.yaml"
    cfg.write_text(TINY)
    r = run_cli("fit", str(cfg), "--out", str(run))
    assert r.returncode == 0, r.stderr
    return run


def with_every_diagnostic(run: Path, dest: Path) -> Path:
    """A copy of the run whose summary also holds the diagnostics a tiny random model does not
    produce (their formats as tlkit writes them), so every section of the page is drawn."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("checkpoints", "model"))
    s = json.loads((dest / "summary.json").read_text())
    s["baseline"] = {"margin": 0.12, "low": 0.05, "high": 0.19, "level": 0.95,
                     "method": "paired bootstrap over 40 test examples, 1 scratch seed",
                     "verdict": "positive transfer", "transfer_accuracy": 0.6,
                     "scratch_accuracies": [0.48],
                     "text": "positive transfer: +12.0 points (95% CI +5.0 to +19.0)"}
    s["classical_baseline"] = {
        "margin": -0.05, "low": -0.09, "high": -0.01, "level": 0.95,
        "method": "paired bootstrap over 40 test examples",
        "verdict": "the classical baseline is better",
        "text": "the classical baseline is better (pixels + logistic regression) by 5.0 points "
                "(transfer minus classical, 95% CI -9.0 to -1.0): transfer is not paying for "
                "itself here, paired bootstrap over 40 test examples",
        "name": "pixels + logistic regression", "c": 0.1, "chosen_on": "C 0.1 by 3-fold",
        "feature_dim": 256, "parameters": 2570, "seconds": 0.4, "transfer_seconds": 3.1,
        "val": {"accuracy": 0.7, "f1_macro": 0.69}, "test": {"accuracy": 0.65, "f1_macro": 0.6}}
    s["forgetting"] = {"cka": {"stem": 0.99, "blocks.0": 0.95, "blocks.4+conv_head+bn2": 0.41},
                       "sample": 24, "least_similar": "blocks.4+conv_head+bn2",
                       "source_task": {"accuracy_before": 0.7, "accuracy_after": 0.55, "n": 20,
                                       "drop_points": 15.0}}
    s["test"]["subgroups"] = {"left": {"n": 20, "accuracy": 0.7, "f1_macro": 0.6},
                              "right": {"n": 20, "accuracy": 0.5, "f1_macro": 0.4},
                              "worst_group": "right", "gap": 0.2, "gap_metric": "accuracy"}
    s["preprocessing_findings"].append({"severity": "warn", "what": "inputs <look> 0-255",
                                        "fix": "scale by 1/255"})
    (dest / "summary.json").write_text(json.dumps(s))
    return dest


# ------------------------------------------------------------------------ tests


@pytest.mark.slow
def test_fit_writes_a_report_that_chromium_opens_without_errors(tiny_run: Path) -> None:
    page = tiny_run / "report.html"
    assert page.is_file(), "fit writes report.html unless --no-report"
    html = page.read_text()
    for section in ("overview", "stack", "curves", "lr", "confusion", "per-class",
                    "calibration", "preprocessing", "config"):
        assert f'<section id="{section}">' in html, section
    # one stack per phase of plan.txt, each block drawn
    assert html.count('alt="layer stack, phase') == 3
    shot = assert_opens_cleanly(page)
    assert shot.size == (1200, 3000)


@pytest.mark.slow
def test_every_diagnostic_has_its_section_and_the_page_loads(tiny_run: Path,
                                                            tmp_path: Path) -> None:
    run = with_every_diagnostic(tiny_run, tmp_path / "run")
    page = write_report(run)
    html = page.read_text()
    for section in ("baseline", "classical", "forgetting", "subgroups"):
        assert f'<section id="{section}">' in html, section
    assert "positive transfer" in html and "blocks.4+conv_head+bn2" in html
    assert "inputs &lt;look&gt; 0-255" in html  # text from the run is escaped
    assert_self_contained(html)
    assert_opens_cleanly(page)


@pytest.mark.slow
def test_the_report_references_nothing_on_a_network(tiny_run: Path) -> None:
    html = (tiny_run / "report.html").read_text()
    assert_self_contained(html)
    assert len(embedded_pngs(html)) >= 6  # stacks, curves, rates, confusion, reliability


@pytest.mark.slow
def test_report_does_not_import_torch(tiny_run: Path, tmp_path: Path) -> None:
    run = with_every_diagnostic(tiny_run, tmp_path / "run")
    code = ("import sys; from tlkit.report import write_report; "
            f"write_report({str(run)!r}); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_report_refuses_a_directory_that_is_not_a_finished_run(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    for target in (tmp_path / "half", tmp_path / "missing"):
        r = run_cli("report", str(target))
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and "error:" in r.stderr
    assert "no summary.json" in run_cli("report", str(tmp_path / "half")).stderr


@pytest.mark.slow
def test_tlkit_report_redraws_the_page(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("report.html"))
    r = run_cli("report", str(run))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(run / "report.html")
    assert (run / "report.html").stat().st_size > 10_000


def _fake_fit(source: Path) -> Any:
    """fit_run that copies a finished run in place of training."""
    def fit_run(cfg: Any, out: Path, **kw: Any) -> dict[str, Any]:
        shutil.copytree(source, out, ignore=shutil.ignore_patterns("report.html"),
                        dirs_exist_ok=True)
        return json.loads((out / "summary.json").read_text())
    return fit_run


@pytest.mark.slow
def test_fit_no_report_and_a_failing_report_leave_the_fit_alone(
        tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import tlkit.report
    import tlkit.run.after_fit
    from tlkit.cli import main

    monkeypatch.setattr(tlkit.run.after_fit, "fit_run", _fake_fit(tiny_run))
    cfg = tiny_run / "config.yaml"
    assert main(["fit", str(cfg), "--out", str(tmp_path / "a"), "--no-report"]) == 0
    assert not (tmp_path / "a" / "report.html").exists()

    def broken(run_dir: Any) -> Path:
        raise ValueError("no ink")

    monkeypatch.setattr(tlkit.report, "write_report", broken)
    assert main(["fit", str(cfg), "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "report could not be written (ValueError: no ink)" in err
    assert "tlkit report" in err


def test_plan_text_round_trips_with_lora_rows() -> None:
    from tlkit.plan.table import GroupRow, Phase, Plan, format_plan

    rows = (GroupRow("embeddings", 1000, False, 1e-5, 0.01, 10),
            GroupRow("layer 0", 2000, True, 2e-5, 0.01, 20, n_adapter=64, adapters_only=True),
            GroupRow("head", 50, True, 1e-3, 0.01, 2))
    plan = Plan("tiny", "lora", (Phase(0, 0, 2, "LoRA adapters", rows),), 3050)
    (phase,) = parse_plan(format_plan(plan))
    assert phase.epochs == (0, 1) and phase.label == "LoRA adapters"
    assert [(b.name, b.n_params, b.trainable, b.adapters_only, b.lr) for b in phase.blocks] == [
        ("embeddings", 1000, False, False, 1e-5), ("layer 0", 2000, True, True, 2e-5),
        ("head", 50, True, False, 1e-3)]


def test_plan_json_reads_back_as_the_phases_of_plan_txt_with_exact_rates() -> None:
    from tlkit.plan.table import GroupRow, Phase, Plan, format_plan, plan_record

    rows = (GroupRow("embeddings", 1000, False, 1.234567e-5, 0.01, 10, n_adapter=8,
                     adapters_only=True),
            GroupRow("layer 0", 2000, True, 2.5e-5, 0.01, 20, n_adapter=64, adapters_only=True),
            GroupRow("head", 50, True, 1e-3, 0.01, 2))
    plan = Plan("tiny", "lora", (Phase(0, 0, 2, "LoRA adapters", rows),
                                 Phase(1, 2, 3, "the head alone", rows[:1] + rows[2:])), 3050)
    record = json.loads(json.dumps(plan_record(plan)))  # as plan.json holds it
    from_json, from_text = plan_from_record(record), parse_plan(format_plan(plan))
    assert from_json is not None and len(from_json) == len(from_text) == 2
    for j, t in zip(from_json, from_text):
        assert (j.index, j.epochs, j.label) == (t.index, t.epochs, t.label)
        assert [(b.name, b.n_params, b.trainable, b.adapters_only) for b in j.blocks] == [
            (b.name, b.n_params, b.trainable, b.adapters_only) for b in t.blocks]
    assert from_json[0].blocks[0].lr == 1.234567e-5  # the text rounds it to 1.23e-05
    for bad in (None, [], {"phases": 3}, {"phases": [{"index": 0}]}, "plan"):
        assert plan_from_record(bad) is None


@pytest.mark.slow
def test_the_report_reads_plan_json_and_a_run_without_one_from_plan_txt(
        tiny_run: Path, tmp_path: Path) -> None:
    text_phases = parse_plan((tiny_run / "plan.txt").read_text())
    assert (tiny_run / "plan.json").is_file() and len(text_phases) == 3
    phases = load_run(tiny_run).phases
    assert [(p.index, p.epochs, p.label, [(b.name, b.trainable) for b in p.blocks])
            for p in phases] == [(p.index, p.epochs, p.label,
                                  [(b.name, b.trainable) for b in p.blocks])
                                 for p in text_phases]
    assert [b.lr for p in phases for b in p.blocks] == pytest.approx(
        [b.lr for p in text_phases for b in p.blocks], rel=5e-3)
    # a run directory of an earlier tlkit (no plan.json), or one whose plan.json is damaged
    old = tmp_path / "old"
    shutil.copytree(tiny_run, old, ignore=shutil.ignore_patterns("checkpoints", "model"))
    (old / "plan.json").unlink()
    assert load_run(old).phases == text_phases
    (old / "plan.json").write_text('{"phases": [{"index": 0}]')
    assert load_run(old).phases == text_phases


def _compare_result(tmp_path: Path) -> dict[str, Any]:
    def row(name: str, acc: float, margin: float | None, advised: bool = False
            ) -> dict[str, Any]:
        r: dict[str, Any] = {"strategy": name, "row": name, "run_dir": str(tmp_path / name),
                             "settings": {}, "test_accuracy": acc, "low": acc - 0.05,
                             "high": acc + 0.05, "trainable_parameters": 1234,
                             "parameters": 99999, "seconds": 12.5, "advised": advised}
        if margin is not None:
            r.update(margin=margin, margin_low=margin - 0.04, margin_high=margin + 0.04,
                     verdict="positive transfer" if margin - 0.04 > 0 else
                     "no measurable effect")
        return r

    return {"source_model": "tiny", "data": "digits", "n_train": 200, "n_test": 100,
            "epochs": 2, "best": "gradual",
            "leaderboard": [row("gradual", 0.8, 0.3, advised=True), row("lora", 0.52, 0.02),
                            row("scratch", 0.5, None)],
            "advice": {"strategy": "gradual", "settings": {}, "reasons": ["small data"]},
            "advised_gap_points": 0.0}


@pytest.mark.slow
def test_compare_and_rank_pages_open_cleanly(tmp_path: Path) -> None:
    compare = write_compare_page(_compare_result(tmp_path), tmp_path / "compare.html")
    rank = write_rank_page({"ranked_by": "logme", "n_train": 200, "seconds": 3.0,
                            "kendall_tau_logme_vs_probe": 1.0, "candidates": [
                                {"candidate": "a", "rank": 1, "logme": 0.9, "hscore": 2.0,
                                 "leep": None, "nce": None, "feature_dim": 8, "seconds": 1.0,
                                 "probe_accuracy": 0.8},
                                {"candidate": "a@none", "rank": 2, "logme": -0.2, "hscore": 0.5,
                                 "leep": -2.1, "nce": -2.0, "feature_dim": 8, "seconds": 2.0,
                                 "probe_accuracy": 0.4}]},
                           tmp_path / "rank.html")
    for page in (compare, rank):
        html = page.read_text()
        assert_self_contained(html)
        assert_opens_cleanly(page)
    assert "gradual  ← advise" in compare.read_text()
    assert "a@none" in rank.read_text()


@pytest.mark.slow
def test_the_browser_check_sees_console_errors_and_failed_loads(tmp_path: Path) -> None:
    """The check above would pass a broken page if it heard nothing: it hears these."""
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH (scripts/setup.sh installs the Debian package "
                    "chromium)")
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><img src="missing.png">'
                    '<script>console.error("drawn wrong")</script></body></html>')
    problems, images, _ = open_in_chromium(page, 400, 300)
    assert any("drawn wrong" in p for p in problems), problems
    assert any(p.startswith("load failed") for p in problems), problems
    assert images == [[True, 0]]


# ------------------------------------------------------------------------ the model card


@pytest.mark.slow
def test_fit_writes_a_model_card_that_renders_summary_metrics(tiny_run: Path,
                                                              tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from tlkit.report.model_card import write_card

    card_file = tiny_run / "README.md"
    assert card_file.is_file(), "fit writes README.md, the model card"
    card = ModelCard(card_file.read_text())
    summary = json.loads((tiny_run / "summary.json").read_text())
    data = card.data.to_dict()
    assert data["library_name"] == "tlkit" and data["datasets"] == ["digits"]
    got = {m["type"]: m["value"]
           for m in data["model-index"][0]["results"][0]["metrics"]}
    assert got["accuracy"] == round(summary["test"]["accuracy"], 4)
    # the results table renders every test metric of summary.json, accuracy with its interval
    row = re.search(r"\| test \| accuracy \| ([0-9.]+) \| ([0-9.]+) to ([0-9.]+) \|", card.text)
    assert row is not None
    value, low, high = map(float, row.groups())
    assert value == pytest.approx(summary["test"]["accuracy"], abs=5e-5) and low <= value <= high
    assert "## Intended use and limitations" in card.text and "## How to load" in card.text
    assert "Not measured: `tlkit fit --baseline`" in card.text
    # the verdicts, subgroups and forgetting a run records come into the card
    rich = with_every_diagnostic(tiny_run, tmp_path / "rich")
    text = write_card(rich).read_text()
    assert "positive transfer: +12.0 points" in text
    assert "transfer is not paying for itself here" in text
    assert "| left | 20 |" in text and "blocks.4+conv_head+bn2" in text
