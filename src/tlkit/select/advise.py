"""Recommend a transfer strategy from measurements, following the concept's strategy table.

| target data          | similar domain         | different domain                          |
|----------------------|------------------------|-------------------------------------------|
| small (< 1K labels)  | feature extraction     | feature extraction from lower layers      |
| large (> 10K labels) | fine-tune all, small LR | fine-tune all, larger LR for upper layers |

Between the two sizes the advice moves from the small row to the large one: partial fine-tuning.

"Similar" is measured, not assumed:
- the layer profile of linear probes (Yosinski et al., 2014): when the top group's features
  probe as well as any lower group's (within the noise of the validation accuracy), the top
  layers suit this target and the domain counts as similar; when a lower group probes better,
  the top layers are specific to the source, and those above the best group are the ones to
  retrain ("feature extraction from lower layers": tlkit keeps the lower groups frozen and trains
  the ones above);
- the proxy A-distance between the target and a reference of the source domain, where the config
  names one (``diagnostics.reference``): at 1.5 or more (of 2) the domains are far apart.

One refinement, for text transformers: with a few hundred labels or more, fine-tuning all layers at
a small learning rate with warmup is the established recipe (Devlin et al., 2019; Mosbach et al.,
2021; Zhang et al., 2021), and mean-pooled frozen sentence features lose to it; the advice says
so when it applies. The recommendation is a pure function of the evidence (``recommend``); the
command gathers the evidence (``gather``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tlkit import strategies
from tlkit.config import AUTO, AUTO_BUDGET, Config, derive
from tlkit.diagnose.probe import format_probe_table
from tlkit.diagnose.probe_run import probe_run
from tlkit.distributed import setup
from tlkit.select.adapt_auto import (ALIGNING, Fit, choose_adaptation, format_record,
                                      source_only)
from tlkit.select.auto import choose, chosen_config
from tlkit.select.candidates import PIXELS, frozen_head
from tlkit.select.record import Choice, format_choice
from tlkit.select.variants import variant
from tlkit.strategies.base import FEATURE_EXTRACTION, FULL, PARTIAL

SMALL, LARGE = 1000, 10000
FAR_PAD = 1.5


@dataclass
class Evidence:
    n_train: int
    n_val: int
    modality: str
    backbone: str
    n_groups: int
    group_names: list[str]
    probes: list[dict[str, Any]]  # per cut, lowest first: group, accuracy, train_accuracy
    logme: float | None = None
    pad: float | None = None  # proxy A-distance to the reference at the backbone's output
    mmd: float | None = None


@dataclass
class Advice:
    strategy: str
    settings: dict[str, Any]  # transfer_config keys to set
    reasons: list[str] = field(default_factory=list)
    similar: bool | None = None
    size: str = ""
    table: str | None = None  # the concept table's pick, where trials measured another
    trials: dict[str, Any] | None = None  # freeze_strategy auto's record (``measure``)
    length: str = ""  # the pick's rates and training length
    adaptation: dict[str, Any] | None = None  # adaptation auto's record (``measure_adaptation``)
    # keys of the user's config that a named strategy refuses, back to their defaults (auto's
    # budget, where the config says freeze_strategy auto)
    resets: dict[str, Any] = field(default_factory=dict)

    def overrides(self) -> list[str]:
        out = [f"transfer_config.freeze_strategy={self.strategy}"]
        out += [f"transfer_config.{k}={v}" for k, v in {**self.settings, **self.resets}.items()]
        if self.adaptation is not None:
            out.append(f"adaptation.method={self.adaptation['method']}")
            if self.adaptation["method"] in ALIGNING:
                out.append(f"adaptation.weight={self.adaptation['weight']:g}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "set": self.overrides()}


def probe_noise(accuracy: float, n: int) -> float:
    """One standard error of an accuracy measured on ``n`` examples (at least one point)."""
    return max(0.01, math.sqrt(max(accuracy * (1 - accuracy), 1e-4) / max(n, 1)))


def recommend(ev: Evidence, tc: Any) -> Advice:
    """The strategy and its settings for this evidence; ``tc`` supplies the config's rates:
    the concept's table read top to bottom, each branch with the reason it gives the user."""
    size = "small" if ev.n_train < SMALL else "large" if ev.n_train > LARGE else "medium"
    reasons = [f"{ev.n_train:,} training labels: {size} data "
               f"(the concept's table: small < {SMALL:,}, large > {LARGE:,})"]
    similar, above = _similarity(ev, reasons)
    strategy, settings = _table(ev, tc, size, similar, above, reasons)
    if ev.logme is not None:
        reasons.append(f"LogME of the frozen features: {ev.logme:.3f} (for comparing backbones "
                       "with `tlkit rank`; it does not change the strategy)")
    return Advice(strategy, settings, reasons, similar, size, resets=_resets(tc))


def _resets(tc: Any) -> dict[str, Any]:
    """A config with freeze_strategy auto and its own auto_budget: the budget back to its
    default, which a named strategy accepts (the rule in tlkit.config.rules)."""
    budget = getattr(tc, "auto_budget", AUTO_BUDGET)
    return {"auto_budget": AUTO_BUDGET} if budget != AUTO_BUDGET else {}


def _similarity(ev: Evidence, reasons: list[str]) -> tuple[bool, int | None]:
    """Whether the domain counts as similar (from the layer profile of linear probes and the
    divergence to the reference), and how many top groups are specific to the source (None
    when no lower group probes better than the top one); the reasons appended."""
    top = ev.probes[-1]
    best = max(ev.probes, key=lambda r: r["accuracy"])
    noise = probe_noise(best["accuracy"], ev.n_val)
    lower_better = (best["cut"] != top["cut"]
                    and best["accuracy"] - top["accuracy"] > noise)
    above = top["cut"] - best["cut"] if lower_better else 0
    if len(ev.probes) == 1:
        reasons.append("the backbone cannot be cut between groups: only its output was probed "
                       f"(val accuracy {top['accuracy']:.3f})")
    elif lower_better:
        reasons.append(
            f"linear probes peak below the top: {best['group']} {best['accuracy']:.3f} against "
            f"the top group's {top['accuracy']:.3f} on {ev.n_val:,} validation examples (more "
            f"than the noise, {noise:.3f}): the top {above} group(s) are specific to the source")
    else:
        reasons.append(
            f"linear probes: the top group ({top['accuracy']:.3f}) is within the noise "
            f"({noise:.3f}) of the best ({best['group']}, {best['accuracy']:.3f}): the top "
            "layers' features suit this target")
    far = ev.pad is not None and ev.pad >= FAR_PAD
    if ev.pad is not None:
        reasons.append(f"proxy A-distance to the reference {ev.pad:.2f} of 2 "
                       f"({'far apart' if far else 'close'}: the threshold is {FAR_PAD})")
    similar = not lower_better and not far
    reasons.append(f"domain: {'similar' if similar else 'different'}")
    return similar, above if lower_better else None


def _table(ev: Evidence, tc: Any, size: str, similar: bool, above: int | None,
           reasons: list[str]) -> tuple[str, dict[str, Any]]:
    """The concept table's cell for this size and similarity (the text-transformer refinement
    first): the strategy in that row (``Strategy.role``) and its settings."""
    settings: dict[str, Any] = {}
    full, partial = strategies.with_role(FULL), strategies.with_role(PARTIAL)
    if ev.modality == "text" and ev.n_train >= 100:
        reasons.append(
            "text transformer with 100 labels or more: fine-tune every layer at a small rate "
            "with warmup and discriminative rates (BERT's recipe; Mosbach et al., 2021 and "
            "Zhang et al., 2021 show it stable with a few hundred labels), in place of the "
            "table's feature extraction")
        if size == "small":
            settings["l2sp_lambda"] = 0.1
            reasons.append("small data: L2-SP (0.1) holds the weights near the pretrained ones "
                           "against forgetting")
        return full, settings
    if size == "small" and similar:
        reasons.append("small data, similar domain: feature extraction (the table)")
        return strategies.with_role(FEATURE_EXTRACTION), settings
    if size == "small":
        settings["top_n"] = max(1, above) if above is not None else max(1, ev.n_groups // 4)
        reasons.append(
            "small data, different domain: features from the lower layers (the table): "
            f"they stay frozen, the top {settings['top_n']} group(s) retrain")
        return partial, settings
    if size == "medium" and similar:
        settings["top_n"] = max(1, ev.n_groups // 4)
        reasons.append(f"medium data, similar domain: between feature extraction and full "
                       f"fine-tuning: the top {settings['top_n']} group(s) train")
        return partial, settings
    if size == "medium":
        n_above = above or 0
        settings["top_n"] = max(2, n_above + 1, ev.n_groups // 4)
        reasons.append(
            f"medium data, different domain: retrain the source-specific top "
            f"{max(n_above, 1)} group(s) and one below them ({settings['top_n']} in all)")
        return partial, settings
    if similar:
        settings["lr_decay_per_layer"] = min(tc.lr_decay_per_layer, 0.5)
        reasons.append("large data, similar domain: fine-tune all with small rates for the "
                       "lower layers (the table)")
    else:
        settings["lr_decay_per_layer"] = max(tc.lr_decay_per_layer, 0.8)
        reasons.append("large data, different domain: fine-tune all, larger rates reaching "
                       "further down (the table)")
    return full, settings


def _stages(log: Any) -> Any:
    """An event sink that logs the runs' stage lines."""
    def event(kind: str, info: dict[str, Any]) -> None:
        if kind == "stage":
            log(str(info.get("what", "")))
    return event


def measure(cfg: Config, adv: Advice, log: Any = lambda s: None) -> Advice:
    """The advice by measurement: ``fit``'s ``freeze_strategy: auto`` trials on the config's
    splits (tlkit.select.auto), the table's pick kept as a reason. The recommendation is then the
    strategy ``fit`` with auto would train, with its rates and length."""
    auto_cfg = derive(source_only(cfg), "advise", transfer_config={"freeze_strategy": AUTO})

    choice = choose(auto_cfg, setup(cfg.transfer_config.device), _stages(log))
    picked = chosen_config(auto_cfg, choice).transfer_config
    reasons = [f"the concept's table (below) points to {adv.strategy}"
               + (f" ({', '.join(f'{k} {v}' for k, v in adv.settings.items())})"
                  if adv.settings else "")
               + f"; freeze_strategy auto picks {choice.chosen} on this data: "
               + (choice.reasons[0] if choice.reasons else "the table of trials above"),
               *adv.reasons]
    if choice.classical is not None and choice.classical.get("beats_pick"):
        # said plainly, first: the cheaper alternative won on validation
        reasons.insert(0, f"consider not transferring at all: {choice.classical['said']}")
    rates = (f"rates: head_lr {picked.head_lr:g}"
             + ("" if choice.chosen == PIXELS or not strategies.trains_backbone(choice.chosen)
                else
                f", backbone_lr {picked.backbone_lr:g} x {picked.lr_decay_per_layer:g}^(L - l)")
             + f"; {picked.epochs} epochs, at least {picked.min_steps} optimizer steps, warmup "
               f"{picked.warmup_steps} steps or {picked.warmup_ratio:g} of them")
    # what reproduces the pick with a named strategy: its own keys and auto's rates, or for the
    # pixels' model the all_frozen head on source_model pixels
    strategy, settings = choice.chosen, {**choice.settings, **choice.rates}
    if choice.chosen == PIXELS:
        strategy, settings = frozen_head(), {"source_model": "pixels",
                                             "pretrained_weights": "packaged"}
    return Advice(strategy, settings, reasons, adv.similar, adv.size,
                  table=adv.strategy if adv.strategy != choice.chosen else None,
                  trials=choice.to_dict(), length=rates, resets=adv.resets)


def measure_adaptation(cfg: Config, adv: Advice, fit: Fit, log: Any = lambda s: None
                       ) -> Advice:
    """With ``adaptation.method: auto``: the adaptations (none, AdaBN, DANN, MMD, CORAL at each
    weight) trained on the recommended strategy and ranked by the label-free score, as ``fit``
    with adaptation auto chooses (tlkit.select.adapt_auto), each trained by ``fit``
    (``tlkit.run.fit_run``); the pick joins the recommendation."""
    if cfg.adaptation.method != "auto":
        return adv
    on = variant(cfg, adv.strategy, adv.settings)
    record = choose_adaptation(on, fit, _stages(log))
    reason = f"adaptation {record['chosen']}: {record['why']}"
    return replace(adv, adaptation=record, reasons=[*adv.reasons, reason])


def gather(cfg: Config, log: Any = lambda s: None) -> Evidence:
    """Measure with ``tlkit probe``'s pipeline: a linear probe per group on the training and
    validation splits, LogME of the top features, and the divergence to the reference at the
    backbone's output where the config names one."""
    r = probe_run(cfg, log=log, divergence_at_every_group=False)
    top = r["divergence"][r["groups"][-1]] if "divergence" in r else {}
    return Evidence(r["n_train"], r["n_val"], r["modality"], r["source_model"], r["n_groups"],
                    r["groups"], r["probes"], logme=r["logme"], pad=top.get("pad"),
                    mmd=top.get("mmd"))


def format_advice(adv: Advice, ev: Evidence, config_path: str = "CONFIG") -> str:
    lines = [f"recommended: freeze_strategy {adv.strategy}"
             + (" (" + ", ".join(f"{k} {v}" for k, v in adv.settings.items()) + ")"
                if adv.settings else ""),
             f"  {adv.strategy}: {strategies.get(adv.strategy).summary}"]
    if adv.length:
        lines.append(f"  {adv.length}")
    if adv.trials is not None:
        lines += ["", "trials (what `tlkit fit` with freeze_strategy auto measures):",
                  format_choice(Choice.from_dict(adv.trials))]
    if adv.adaptation is not None:
        lines += ["", "adaptations on the unlabelled target, ranked without its labels (what "
                      "`tlkit fit` with adaptation.method auto measures):",
                  format_record(adv.adaptation)]
    lines += ["", "evidence and how it led there:"]
    lines += [f"  - {r}" for r in adv.reasons]
    lines += ["", "linear probes per layer group (* the best):", format_probe_table(ev.probes),
              "", "to train it:",
              f"  tlkit fit {config_path} " + " ".join(f"--set {o}" for o in adv.overrides())]
    return "\n".join(lines)
