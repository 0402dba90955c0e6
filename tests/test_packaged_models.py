"""The real models that ship in pip packages: they recognise what they were trained on, and
`tlkit plan` lays them out as the formula says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.packaged

ROOT = Path(__file__).resolve().parents[1]
CAT = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug
VISION = ["mobilenetv2", "efficientnet-lite0"]




def _images():
    from PIL import Image
    from skimage import data

    return {"chelsea": Image.fromarray(data.chelsea()), "coffee": Image.fromarray(data.coffee())}


def _model_transform(model):
    import timm

    cfg = timm.data.resolve_data_config({}, model=model)
    return timm.data.create_transform(**cfg)


@pytest.fixture(scope="module", params=VISION)
def classifier(request):
    from tlkit.backbones.packaged import imagenet_classifier

    return request.param, imagenet_classifier(request.param).eval()


def test_imagenet_classes(classifier):
    name, model = classifier
    tf = _model_transform(model)
    imgs = _images()
    x = torch.stack([tf(imgs["chelsea"]), tf(imgs["coffee"])])
    with torch.no_grad():
        top = model(x).argmax(-1).tolist()
    assert top[0] in CAT, f"{name}: chelsea -> class {top[0]}"
    assert top[1] in COFFEE, f"{name}: coffee -> class {top[1]}"


def test_backbone_carries_the_pretrained_weights(classifier):
    """tlkit's backbone (classifier removed) gives the features the original classifier reads."""
    from tlkit.backbones import load_backbone

    name, model = classifier
    backbone = load_backbone(name).eval()
    assert backbone.feature_dim == model.num_features
    tf = _model_transform(model)
    x = tf(_images()["chelsea"]).unsqueeze(0)
    with torch.no_grad():
        feats = backbone(x)
        logits = model.get_classifier()(feats)
        assert torch.allclose(logits, model(x), atol=1e-4)
    assert logits.argmax(-1).item() in CAT


def test_backbone_preprocessing_is_the_models_own(classifier):
    import timm

    from tlkit.backbones import load_backbone

    name, model = classifier
    cfg = timm.data.resolve_data_config({}, model=model)
    p = load_backbone(name).preprocessing
    assert p.input_size == cfg["input_size"][-1] == 224
    assert p.interpolation == cfg["interpolation"]
    assert p.mean == pytest.approx(cfg["mean"]) and p.std == pytest.approx(cfg["std"])
    assert p.resize_size == round(224 / cfg["crop_pct"])


def test_conversion_into_a_fresh_cache(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from tlkit.backbones.packaged import PACKAGED_VISION, convert_to_safetensors

    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path))
    pv = PACKAGED_VISION["mobilenetv2"]
    out = convert_to_safetensors(pv)
    assert out.is_file() and tmp_path in out.parents
    src = torch.load(pv.source_file(), map_location="cpu", weights_only=True)
    converted = load_file(str(out))
    import timm

    target = timm.create_model(pv.timm_arch).state_dict()
    assert set(converted) == set(target) and len(src) == len(target)
    for a, key in zip(src.values(), target, strict=True):  # renamed in order, every tensor kept
        assert torch.equal(a, converted[key]), key
    assert convert_to_safetensors(pv) == out  # cached: the second call reuses the file


def test_minilm_scores_a_paraphrase_above_an_unrelated_pair():
    from transformers import AutoTokenizer

    from tlkit.backbones import load_backbone

    b = load_backbone("minilm-l6").eval()
    assert b.pooling == "mean" and b.feature_dim == 384
    tok = AutoTokenizer.from_pretrained(b.preprocessing.tokenizer)
    texts = [
        "A man is playing a guitar on stage.",
        "Someone performs music with a guitar in front of an audience.",
        "The stock market fell sharply after the announcement.",
    ]
    enc = tok(texts, padding=True, truncation=True, max_length=b.preprocessing.max_length,
              return_tensors="pt")
    with torch.no_grad():
        emb = torch.nn.functional.normalize(b(dict(enc)), dim=-1)
    paraphrase = float(emb[0] @ emb[1])
    unrelated = float(emb[0] @ emb[2])
    assert paraphrase > unrelated + 0.2, (paraphrase, unrelated)
    assert paraphrase > 0.5


def _parse_plan(text: str) -> list[dict[str, tuple[int, bool, float]]]:
    row = re.compile(r"^\s+(\S+)\s+([\d,]+)\s+(trainable|frozen)\s+\(?([0-9.e+-]+)\)?\s")
    phases = []
    for block in text.split("\nphase ")[1:]:
        rows = {}
        for line in block.splitlines():
            m = row.match(line)
            if m:
                rows[m.group(1)] = (int(m.group(2).replace(",", "")), m.group(3) == "trainable",
                                    float(m.group(4)))
        phases.append(rows)
    return phases


@pytest.mark.parametrize("name", VISION)
def test_plan_of_a_packaged_vision_backbone(name, capsys):
    from tlkit.backbones import load_backbone
    from tlkit.cli import main

    code = main([
        "plan", str(ROOT / "examples" / "quickstart.yaml"),
        "--set", f"transfer_config.source_model={name}",
        "--set", "data.source=fashion_mnist",
        "--set", "transfer_config.epochs=5",
        "--set", "transfer_config.lr_decay_per_layer=0.7",
        "--set", ("transfer_config.unfreeze_schedule=[{epoch: 1, unfreeze: last_block}, "
                  "{epoch: 2, unfreeze: last_3_blocks}, {epoch: 4, unfreeze: all}]"),
    ])
    out, err = capsys.readouterr()
    assert code == 0, err
    backbone = load_backbone(name)
    groups = [g.name for g in backbone.layer_groups()]
    total = sum(p.numel() for p in backbone.parameters()) + backbone.feature_dim * 10 + 10
    phases = _parse_plan(out)
    assert len(phases) == 4
    L = len(groups)
    for i, phase in enumerate(phases):
        assert list(phase) == ["head"] + groups[::-1]  # every group, top first
        assert sum(v[0] for v in phase.values()) == total
        for level, g in enumerate(groups, start=1):
            assert phase[g][2] == pytest.approx(1e-4 * 0.7 ** (L - level), rel=5e-3), (g, phase[g])
        assert phase["head"][2] == pytest.approx(1e-3)
        n_trainable = [0, 1, 3, L][i]
        assert [phase[g][1] for g in groups] == [False] * (L - n_trainable) + [True] * n_trainable
    assert groups[0] == "stem" and "conv_head" in groups[-1]


@pytest.mark.slow
def test_forgetting_reports_source_task_accuracy_before_and_after(tmp_path: Path) -> None:
    """diagnostics.source_task: photos in folders named by their ImageNet class index; fit
    reports the source classifier's accuracy through the pretrained and the adapted backbone,
    and the CKA of each group."""
    import json

    from tlkit.config import validate
    from tlkit.run import fit_run

    imgs = _images()
    for name, cls in (("chelsea", 285), ("coffee", 967)):
        d = tmp_path / "source" / str(cls)
        d.mkdir(parents=True)
        w, h = imgs[name].size
        for i, box in enumerate([(0, 0, w, h), (w // 10, h // 10, w, h), (0, 0, w - w // 10, h)]):
            imgs[name].crop(box).save(d / f"{name}{i}.png")
    raw = {"transfer_config": {"source_model": "mobilenetv2", "freeze_strategy": "none",
                               "backbone_lr": 3e-3, "head_lr": 1e-2, "epochs": 1,
                               "batch_size": 16, "early_stopping_patience": None,
                               "device": "cpu"},
           "data": {"source": "fashion_mnist", "limit": 96, "image_size": 64},
           "diagnostics": {"source_task": {"source": str(tmp_path / "source")}, "sample": 50}}
    summary = fit_run(validate(raw), tmp_path / "run", test_limit=100)
    f = summary["forgetting"]
    st = f["source_task"]
    assert st["n"] == 6
    # the packaged classifier knows these photos (a cat class, espresso) before fine-tuning
    assert st["accuracy_before"] >= 0.5
    assert 0.0 <= st["accuracy_after"] <= 1.0
    assert st["drop_points"] == round(100 * (st["accuracy_before"] - st["accuracy_after"]), 2)
    assert set(f["cka"]) >= {"stem", "blocks.6+conv_head+bn2"}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["forgetting"] == f
