"""The run directory's model card: README.md with the Hugging Face model-card metadata block
(``huggingface_hub.ModelCardData``: base model, data set, the test metrics as ``model-index``),
then what a reader of a shared model needs: backbone and weights, data and splits, the strategy
and its plan, metrics with 95% intervals, the transfer verdicts where measured, calibration,
subgroups, intended use and limitations, and how to load the model and each export.

Everything comes from the files fit wrote (summary.json, config.yaml, plan.txt, model/,
predictions.npz, the export descriptions); nothing is recomputed but the intervals, which are a
bootstrap over the saved test outputs. No torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tlkit.files import atomic_write
from tlkit.metrics import bootstrap_intervals
from tlkit.report.domains import (adaptation, adapted_note, interval, target_test,
                                  test_name)
from tlkit.report.rundata import RunData, load_run

CARD = "README.md"
RESAMPLES = 1000
_TASK_TYPE = {("text", "single_label"): "text-classification",
              ("text", "multi_label"): "text-classification",
              ("text", "regression"): "text-classification",
              ("image", "single_label"): "image-classification",
              ("image", "multi_label"): "image-classification",
              ("image", "regression"): "image-classification",
              ("text", "token_classification"): "token-classification",
              ("text", "question_answering"): "question-answering"}
_HEADLINE = {"single_label": ("accuracy", "f1_macro"), "multi_label": ("f1_micro", "f1_macro"),
             "regression": ("pearson", "spearman", "mse", "mae"),
             "token_classification": ("entity_f1", "token_accuracy"),
             "question_answering": ("exact_match", "f1")}
_EXPORTS = {
    "onnx": "`onnxruntime.InferenceSession(\"{file}\")`; inputs, outputs, preprocessing and labels "
            "are in `{file}.json`",
    "torchscript": "`torch.jit.load(\"{file}\")`; inputs, preprocessing and labels are in "
                   "`{file}.json`",
    "hf": "`AutoModelForSequenceClassification.from_pretrained(\"{file}\", "
          "trust_remote_code=True)` and `AutoTokenizer.from_pretrained(\"{file}\")` "
          "(transformers; labels in `config.id2label`)",
    # a question-answering run's hf export: a stock architecture, no custom code
    "hf_qa": "`AutoModelForQuestionAnswering.from_pretrained(\"{file}\")` and "
             "`AutoTokenizer.from_pretrained(\"{file}\")` (transformers; start and end logits "
             "per token)",
    "timm": "`timm.create_model(\"local-dir:{file}\", pretrained=True)`; preprocessing: "
            "`timm.data.resolve_data_config({{}}, model=model)`",
    "peft": "`PeftModel.from_pretrained(AutoModel.from_pretrained(BASE), \"{file}\")` with "
            "BASE from `adapter_config.json`, then the pooling and head of "
            "`{file}/tlkit_head.json`",
}


def write_card(run_dir: Path) -> Path:
    """Write (or rewrite) ``run_dir/README.md`` from the run's files; returns its path."""
    run = load_run(Path(run_dir))
    text = render(run)
    path = run.path / CARD
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def render(run: RunData) -> str:
    s = run.summary
    cfg = yaml.safe_load(run.config_text) if run.config_text else {}
    model_json = _json(run.path / "model" / "model.json")
    intervals = _intervals(run.path, s.get("task", "single_label"))
    parts = [_metadata(run, cfg, model_json), _title(run, s), _model(s, cfg, model_json),
             _data(s), _training(run, s), _results(s, intervals), _verdicts(s),
             _calibration(s), _subgroups(s), _limitations(s), _loading(run, s)]
    return "\n".join(p for p in parts if p)


# --------------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------------


def _metadata(run: RunData, cfg: dict[str, Any], model_json: dict[str, Any]) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    s = run.summary
    data = s.get("data", {})
    modality, task = data.get("modality", "text"), s.get("task", "single_label")
    source = str(data.get("source", "data"))
    which = "test" if s.get("test") else "val"
    results = [EvalResult(task_type=_TASK_TYPE.get((modality, task), "other"),
                          dataset_type=source, dataset_name=source, dataset_split=which,
                          metric_type=name, metric_value=round(float(v), 4),
                          metric_name=name.replace("_", " "))
               for name in _HEADLINE.get(task, ())
               if isinstance(v := (s.get(which) or {}).get(name), (int, float))]
    results += _target_results(s, _TASK_TYPE.get((modality, task), "other"))
    card = ModelCardData(
        library_name="tlkit", base_model=_base_model(s, model_json), datasets=[source],
        tags=["tlkit", "transfer-learning", modality, str(s.get("strategy", ""))],
        model_name=run.path.name, eval_results=results or None,
        pipeline_tag=_TASK_TYPE.get((modality, task)))
    return f"---\n{card.to_yaml()}\n---\n"


def _target_results(s: dict[str, Any], task_type: str) -> list[Any]:
    """The model-index entries of the target domain test set (adaptation.target.test)."""
    from huggingface_hub import EvalResult

    t = target_test(s)
    if t is None:
        return []
    where = str(s.get("data", {}).get("origins", {}).get("target_test", "target test"))
    return [EvalResult(task_type=task_type, dataset_type=where, dataset_name=where,
                       dataset_split="test", metric_type=name,
                       metric_value=round(float(v), 4), metric_name=name.replace("_", " "))
            for name in _HEADLINE.get(s.get("task", "single_label"), ())
            if isinstance(v := t.get(name), (int, float))]


def _title(run: RunData, s: dict[str, Any]) -> str:
    source = s.get("data", {}).get("source", "its data")
    title = (f"# {run.path.name}\n\n{s.get('source_model')} adapted to {source} by tlkit "
             f"(strategy `{s.get('strategy')}`, task {s.get('task')}).\n")
    return title + _distilled(s)


def _distilled(s: dict[str, Any]) -> str:
    """A student's provenance and how it compares with its teacher (tlkit distill)."""
    d = s.get("distillation")
    if not isinstance(d, dict):
        return ""
    lines = [f"\nDistilled from `{d.get('teacher')}` (knowledge distillation at temperature "
             f"{d.get('temperature')}, soft-target weight {d.get('alpha')}); the student is "
             f"{d.get('student')}."]
    t = d.get("test")
    if isinstance(t, dict):
        diff = t.get("difference", {})
        lines.append(f"On the same {t.get('examples')} test examples: {t.get('metric')} "
                     f"{t.get('student', 0):.4f} against the teacher's {t.get('teacher', 0):.4f} "
                     f"(difference {diff.get('value', 0):+.4f}, 95% interval "
                     f"{diff.get('low', 0):+.4f} to {diff.get('high', 0):+.4f})"
                     + (f"; it predicts the teacher's label on "
                        f"{t['agreement']['value']:.1%} of them (95% interval "
                        f"{t['agreement']['low']:.1%} to {t['agreement']['high']:.1%})"
                        if isinstance(t.get("agreement"), dict) else "") + ".")
    return " ".join(lines) + "\n"


def _model(s: dict[str, Any], cfg: dict[str, Any], model_json: dict[str, Any]) -> str:
    tc = cfg.get("transfer_config", {}) if isinstance(cfg, dict) else {}
    bb = model_json.get("backbone", {})
    head = model_json.get("head", {})
    prep = model_json.get("preprocessing", {})
    lines = ["## Model", "",
             f"- backbone: `{s.get('source_model')}` ({bb.get('adapter', '?')}"
             f"{', ' + str(bb['model_name']) if bb.get('model_name') else ''}), "
             f"weights: {tc.get('pretrained_weights', 'packaged')}",
             f"- head: {head.get('type', 'linear')}, {head.get('num_outputs', '?')} outputs",
             f"- parameters: {s.get('parameters', 0):,}, of which trainable in the last phase: "
             f"{s.get('trainable_parameters_last_phase', 0):,}"]
    if prep.get("kind") == "image":
        lines.append(f"- preprocessing: images resized to {prep.get('resize_size')}, "
                     f"center-cropped to {prep.get('input_size')} px, normalised with mean "
                     f"{prep.get('mean')} and std {prep.get('std')}")
    elif prep:
        lines.append(f"- preprocessing: the backbone's tokenizer, at most "
                     f"{prep.get('max_length', '?')} tokens")
    return "\n".join(lines) + "\n"


def _data_sizes(s: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """summary.json's data section and its split sizes."""
    d = s.get("data", {})
    return d, d.get("sizes", {})


def _data(s: dict[str, Any]) -> str:
    d, sizes = _data_sizes(s)
    lines = ["## Data and splits", "",
             f"- source: `{d.get('source')}` ({d.get('modality')}, {d.get('num_classes', '-')} "
             f"classes)" if d.get("num_classes") else f"- source: `{d.get('source')}`"]
    origins = d.get("origins", {})
    for split in ("train", "val", "test"):
        if split in sizes:
            origin = origins.get("validation" if split == "val" else split)
            lines.append(f"- {test_name(s) if split == 'test' else split}: {sizes[split]:,} "
                         f"examples{' (' + str(origin) + ')' if origin else ''}")
    t = target_test(s)
    if t is not None:
        lines.append(f"- target domain test: {t.get('n', '?'):,} examples "
                     f"({origins.get('target_test', 'adaptation.target.test')})")
    rare = d.get("train_only_classes")
    if rare:
        lines.append(f"- classes in the training split only (too few examples to hold some "
                     f"out): {', '.join(map(str, rare))}")
    if s.get("skipped_images"):
        lines.append(f"- images skipped as unreadable: {s['skipped_images']}")
    return "\n".join(lines) + "\n"


def _training(run: RunData, s: dict[str, Any]) -> str:
    sel = s.get("model_selection", {})
    lines = ["## Training", "",
             f"- strategy: `{s.get('strategy')}`; epochs run: {s.get('epochs_run')}, the kept "
             f"weights are epoch {s.get('best_epoch')}'s (chosen on {sel.get('metric', '?')} "
             f"over {sel.get('val_examples', '?')} validation examples"
             f"{'; noisy: ' + str(sel['why']) if sel.get('noisy') else ''})",
             f"- training time: {s.get('train_seconds', 0):.1f} s"]
    auto = s.get("auto")
    if isinstance(auto, dict) and auto.get("chosen"):
        lines.append(f"- `freeze_strategy: auto` chose `{auto['chosen']}`"
                     f"{': ' + str(auto['why']) if auto.get('why') else ''}")
    if run.plan_text:
        lines += ["", "The plan (`tlkit plan`): every group's state and learning rate per phase.",
                  "", "```", run.plan_text.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _results(s: dict[str, Any], intervals: dict[str, tuple[float, float]]) -> str:
    lines = ["## Results", "", "| split | metric | value | 95% interval |", "|---|---|---|---|"]
    target = target_test(s) or {}
    # the target's intervals were computed by the fit, on outputs it does not keep
    target_cis = {k: ci for k in target if (ci := interval(target, k))}
    rows: list[tuple[str, dict[str, Any], dict[str, tuple[float, float]]]] = [
        ("val", s.get("val") or {}, {}), (test_name(s), s.get("test") or {}, intervals),
        ("target domain test", target, target_cis)]
    for split, metrics, cis in rows:
        for name, v in metrics.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or name == "n":
                continue
            ci = cis.get(name)
            shown = f"{ci[0]:.4f} to {ci[1]:.4f}" if ci else ""
            lines.append(f"| {split} | {name} | {v:.4f} | {shown} |")
    if s.get("val_in_fit"):
        lines += ["", "The validation metrics are in-sample: the solved head was refitted on "
                      "training and validation together."]
    if intervals or target:
        lines += ["", f"Intervals: percentile bootstrap over the test examples ({RESAMPLES} "
                      "resamples of the saved test outputs"
                  + ("; the target domain test's over its own examples" if target else "")
                  + ")."]
    said = adapted_note(s)
    if said:
        lines += ["", said]
    test = s.get("test") or {}
    per_class = test.get("per_class") or test.get("per_type")
    what = "entity type" if "per_type" in test else "class"
    if isinstance(per_class, dict) and 0 < len(per_class) <= 30:
        lines += ["", f"| {what} ({test_name(s)}) | precision | recall | F1 | support |",
                  "|---|---|---|---|---|"]
        for c, m in per_class.items():
            lines.append(f"| {c} | {m.get('precision', 0):.3f} | {m.get('recall', 0):.3f} | "
                         f"{m.get('f1', 0):.3f} | {m.get('support', 0)} |")
    return "\n".join(lines) + "\n"


def _verdicts(s: dict[str, Any]) -> str:
    rows = [(name, s[key]) for key, name in (("baseline", "training from scratch"),
                                              ("classical_baseline", "the classical baseline"))
            if isinstance(s.get(key), dict)]
    if not rows:
        return ("## Transfer verdict\n\nNot measured: `tlkit fit --baseline` trains the same "
                "model from scratch (and a classical baseline) and says whether transfer "
                "helped.\n")
    lines = ["## Transfer verdict", ""]
    for name, v in rows:
        lines.append(f"- against {name}: {v.get('text', v.get('verdict', ''))}")
    return "\n".join(lines) + "\n"


def _calibration(s: dict[str, Any]) -> str:
    c = s.get("calibration")
    if not isinstance(c, dict) or "temperature" not in c:
        return ""
    return ("## Calibration\n\n"
            f"Temperature {c['temperature']:.3f} fitted on validation; expected calibration "
            f"error on {test_name(s)} {c.get('ece_before', float('nan')):.4f} before, "
            f"{c.get('ece_after', float('nan')):.4f} after scaling.\n")


def _subgroups(s: dict[str, Any]) -> str:
    groups = (s.get("test") or {}).get("subgroups")
    if not isinstance(groups, dict) or not groups:
        return ""
    lines = [f"## Subgroups ({test_name(s)})", "", "| group | n | metrics |", "|---|---|---|"]
    for g, m in groups.items():
        if isinstance(m, dict):
            shown = ", ".join(f"{k} {v:.4f}" for k, v in m.items()
                              if isinstance(v, float))
            lines.append(f"| {g} | {m.get('n', '')} | {shown} |")
    return "\n".join(lines) + "\n"


def _made_for(s: dict[str, Any]) -> str:
    """The intended-use line of an adapted run: the target domain's inputs, and what measured
    the model on each domain."""
    _, sizes = _data_sizes(s)
    a = adaptation(s)
    t = target_test(s)
    on_target = (f"on {t.get('n', '?'):,} labelled target examples" if t is not None else
                 "not on labelled target examples (give adaptation.target.test to measure it)")
    return (f"- Made for inputs of the target domain (`{a.get('target', '?')}`), to which it was "
            f"adapted: it was trained on labelled examples of the source domain "
            f"(`{s.get('data', {}).get('source')}`), measured on "
            f"{sizes.get('test') or sizes.get('val', '?')} source domain test examples and "
            f"{on_target}; "
            "measure it on your own data (`tlkit evaluate RUN --data YOUR_DATA`) before "
            "relying on it.")


def _limitations(s: dict[str, Any]) -> str:
    d, sizes = _data_sizes(s)
    if adapted_note(s):  # the source's inputs are not what an adapted model is for
        made_for = _made_for(s)
    elif isinstance(sizes.get("train"), int):
        made_for = (f"- Made for inputs like those of `{d.get('source')}`: it was trained on "
                    f"{sizes.get('train', '?'):,} examples and measured on "
                    f"{sizes.get('test', sizes.get('val', '?')):,}; on inputs from another "
                    "source, measure it again (`tlkit evaluate RUN --data YOUR_DATA`) before "
                    "relying on it.")
    else:
        made_for = f"- Made for inputs like those of `{d.get('source')}`."
    lines = ["## Intended use and limitations", "", made_for]
    for f in s.get("preprocessing_findings") or []:
        if isinstance(f, dict) and f.get("severity") != "info":
            lines.append(f"- preprocessing check ({f.get('severity')}): {f.get('what')}")
    sel = s.get("model_selection", {})
    if sel.get("noisy"):
        lines.append(f"- the kept epoch was chosen on little validation data ({sel.get('why')})")
    forgetting = s.get("forgetting")
    if isinstance(forgetting, dict) and forgetting.get("least_similar"):
        cka = forgetting.get("cka", {}).get(forgetting["least_similar"])
        lines.append(f"- forgetting: the group most changed from the pretrained backbone is "
                     f"{forgetting['least_similar']} (CKA {cka}); what the backbone knew "
                     "beyond this task may be lost there")
    lines.append("- The pretrained backbone's own licence and known biases carry over.")
    return "\n".join(lines) + "\n"


def _loading(run: RunData, s: dict[str, Any]) -> str:
    lines = ["## How to load", "", "```bash",
             f"tlkit predict {run.path} \"an input\"          # or image files",
             f"tlkit predict {run.path} --data FILE_OR_FOLDER --out preds.csv",
             f"tlkit evaluate {run.path} --data YOUR_LABELLED_DATA", "```"]
    exports = _exports(run.path)
    if exports:
        lines += ["", "Exports of this run:", ""]
        for fmt, file in exports:
            how = _EXPORTS.get(fmt if fmt != "hf" or run.summary.get("task") !=
                               "question_answering" else "hf_qa",
                               "see `{file}.json`").format(file=file)
            lines.append(f"- {fmt}: `{file}`: {how}")
    else:
        lines += ["", "`tlkit export RUN --format onnx|torchscript` writes a file that runs "
                      "without tlkit; this card lists it once written."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _json(path: Path) -> dict[str, Any]:
    try:
        got = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return got if isinstance(got, dict) else {}


def _base_model(s: dict[str, Any], model_json: dict[str, Any]) -> str | None:
    bb = model_json.get("backbone", {})
    name = bb.get("model_name") or bb.get("name") or s.get("source_model")
    return str(name) if name else None


def _exports(run_dir: Path) -> list[tuple[str, str]]:
    """(format, file relative to the run) of each export whose description sits in the run."""
    found = []
    for desc in sorted(run_dir.rglob("*.json")):
        if desc.parent.name in ("model", "checkpoints") or desc.parent == run_dir:
            continue
        meta = _json(desc)
        if meta.get("format") in _EXPORTS and meta.get("file"):
            found.append((str(meta["format"]),
                          str((desc.parent / str(meta["file"])).relative_to(run_dir))))
    return found


def _intervals(run_dir: Path, task: str) -> dict[str, tuple[float, float]]:
    """95% percentile-bootstrap intervals of the test headline metrics from predictions.npz."""
    f = run_dir / "predictions.npz"
    if not f.is_file():
        return {}
    try:
        with np.load(f) as z:
            out, y = z["test_outputs"], z["test_targets"]
    except (OSError, KeyError, ValueError):
        return {}
    return bootstrap_intervals(out, y, task, RESAMPLES, seed=0)
