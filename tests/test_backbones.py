"""Backbones and heads: features of the advertised size, no pretrained classifier left behind,
heads sized for the task, the model's own preprocessing, names and offline checks."""

from __future__ import annotations

import os
import shutil
import time

import pytest
import torch
from torch import nn

from tlkit.assemble import assemble
from tlkit.backbones import backbone_from_spec, list_backbones, load_backbone
from tlkit.backbones.base import ImagePreprocessing, TextPreprocessing
from tlkit.config import TransferConfig
from tlkit.errors import UserError
from tlkit.heads import build_head
from tlkit.model import TransferModel

IMAGE_SPECS = ["timm:test_vit", "timm:test_efficientnet", "timm:test_resnet",
               "torchvision:mobilenet_v2", "torchvision:resnet18"]






def _tokens(folder: str, texts: list[str]) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    return dict(tok(texts, padding=True, return_tensors="pt"))


def _no_imagenet_classifier(module: nn.Module) -> None:
    wide = [n for n, m in module.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d)) and getattr(m, "out_features",
                                                                 getattr(m, "out_channels", 0))
            == 1000]
    assert not wide, f"a 1000-way layer is left: {wide}"


# --------------------------------------------------------------------------------------------------
# Features and the pretrained classifier
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", IMAGE_SPECS)
def test_image_backbone_gives_features_and_no_classifier(spec):
    b = load_backbone(spec, "none")
    assert b.kind == "image"
    assert isinstance(b.preprocessing, ImagePreprocessing)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = b.eval()(x)
    assert out.shape == (2, b.feature_dim)
    _no_imagenet_classifier(b)


def test_timm_backbone_carries_timms_preprocessing():
    import timm

    b = load_backbone("timm:test_vit", "none")
    dc = timm.data.resolve_data_config({}, model=timm.create_model("test_vit"))
    p = b.preprocessing
    assert p.input_size == dc["input_size"][-1]
    assert p.mean == pytest.approx(dc["mean"]) and p.std == pytest.approx(dc["std"])
    assert p.interpolation == dc["interpolation"]
    assert p.resize_size >= p.input_size


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_text_backbone_pools_to_feature_dim(tiny_bert_dir, pooling):
    b = load_backbone(f"hf:{tiny_bert_dir}", "packaged", pooling=pooling)
    assert b.kind == "text" and b.feature_dim == 32
    assert isinstance(b.preprocessing, TextPreprocessing)
    assert b.preprocessing.tokenizer == str(tiny_bert_dir)
    assert b.preprocessing.max_length <= 64  # never past the position embeddings
    with torch.no_grad():
        out = b.eval()(_tokens(b.preprocessing.tokenizer, ["a short one", "a longer one here"]))
    assert out.shape == (2, 32)
    assert (getattr(b.model, "pooler", None) is not None) == (pooling == "pooler")


def test_mean_pooling_ignores_padding(tiny_bert_dir):
    b = load_backbone(f"hf:{tiny_bert_dir}", "packaged").eval()
    alone = _tokens(str(tiny_bert_dir), ["the cat sat"])
    padded = _tokens(str(tiny_bert_dir), ["the cat sat", "a much longer sentence than the first"])
    with torch.no_grad():
        a = b(alone)[0]
        p = b(padded)[0]
    assert torch.allclose(a, p, atol=1e-5)


def test_text_weights_are_loaded_from_the_folder(tiny_bert_dir):
    from transformers import BertModel

    saved = BertModel.from_pretrained(tiny_bert_dir)
    b = load_backbone(f"hf:{tiny_bert_dir}", "packaged")
    assert torch.equal(b.model.embeddings.word_embeddings.weight,
                       saved.embeddings.word_embeddings.weight)
    r = load_backbone(f"hf:{tiny_bert_dir}", "none")
    assert not torch.equal(r.model.embeddings.word_embeddings.weight,
                           saved.embeddings.word_embeddings.weight)


# --------------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("outputs", [1, 2, 7])
def test_head_output_sizes(kind, outputs):
    head = build_head(24, outputs, kind, hidden_size=16, dropout=0.1)
    assert head(torch.randn(5, 24)).shape == (5, outputs)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == (1 if kind == "linear" else 2)
    if kind == "mlp":
        assert linears[0].out_features == 16


def test_head_needs_an_output():
    with pytest.raises(ValueError):
        build_head(8, 0)


@pytest.mark.parametrize(
    "task, num_outputs",
    [("single_label", 3), ("single_label", 2), ("multi_label", 5), ("regression", 1),
     ("regression", 2)],
)
@pytest.mark.parametrize("head_type", ["linear", "mlp"])
def test_model_output_matches_the_task(task, num_outputs, head_type):
    tc = TransferConfig(source_model="timm:test_resnet", pretrained_weights="none",
                        freeze_strategy="all_frozen", head={"type": head_type, "hidden_size": 8})
    asm = assemble(tc, num_outputs)
    with torch.no_grad():
        out = asm.model.eval()(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, num_outputs)
    _no_imagenet_classifier(asm.model)


def test_text_model_end_to_end(tiny_bert_dir):
    tc = TransferConfig(source_model=f"hf:{tiny_bert_dir}", freeze_strategy="none")
    asm = assemble(tc, 4, modality="text")
    assert asm.model.backbone.kind == "text"
    out = asm.model.eval()(_tokens(str(tiny_bert_dir), ["one", "two words"]))
    assert out.shape == (2, 4)


def test_modality_mismatch_is_a_user_error():
    tc = TransferConfig(source_model="timm:test_resnet", pretrained_weights="none",
                        freeze_strategy="all_frozen")
    with pytest.raises(UserError, match="text"):
        assemble(tc, 2, modality="text")


def test_transfer_model_is_backbone_then_head():
    b = load_backbone("timm:test_resnet", "none").eval()
    head = build_head(b.feature_dim, 3)
    m = TransferModel(b, head).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(m(x), head(b(x)))


# --------------------------------------------------------------------------------------------------
# Weights from local files, rebuilding from a spec
# --------------------------------------------------------------------------------------------------


def test_timm_weights_from_a_local_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = timm.create_model("test_resnet")  # with its classifier, as checkpoints come
    f = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(f))
    b = load_backbone("timm:test_resnet", str(f))
    mine = dict(b.model.state_dict())
    for k, v in src.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(mine[k], v), k
    _no_imagenet_classifier(b)


def test_torchvision_weights_from_a_local_file(tmp_path):
    import torchvision

    src = torchvision.models.resnet18()
    f = tmp_path / "r.pth"
    torch.save(src.state_dict(), f)
    b = load_backbone("torchvision:resnet18", str(f))
    assert torch.equal(b.model.conv1.weight, src.conv1.weight)
    _no_imagenet_classifier(b)


def test_weights_of_another_architecture_are_refused(tmp_path):
    # timm loads non-strictly once the classifier is dropped: without a check, a wrong file
    # would leave the whole network at its random initialisation, silently.
    import timm

    f = tmp_path / "vit.pth"
    torch.save(timm.create_model("test_vit").state_dict(), f)
    with pytest.raises(UserError, match=r"does not fit timm test_resnet: missing"):
        load_backbone("timm:test_resnet", str(f))


def test_checkpoint_without_its_classifier_loads(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(2)
    src = timm.create_model("test_efficientnet", num_classes=0)
    f = tmp_path / "features_only.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(f))
    b = load_backbone("timm:test_efficientnet", str(f))
    assert torch.equal(b.model.conv_stem.weight, src.conv_stem.weight)


@pytest.mark.parametrize("source", ["timm:test_resnet", "torchvision:resnet18"])
def test_unreadable_weights_file_is_a_user_error(tmp_path, source):
    f = tmp_path / "broken.pth"
    f.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="broken.pth"):
        load_backbone(source, str(f))


def test_pickled_module_instead_of_state_dict_is_a_user_error(tmp_path):
    import torchvision

    f = tmp_path / "full.pth"
    torch.save(torchvision.models.resnet18(), f)  # the whole module, not its state_dict
    with pytest.raises(UserError, match="state_dict"):
        load_backbone("torchvision:resnet18", str(f))


def test_torchvision_weights_of_another_depth_are_refused(tmp_path):
    import torchvision

    f = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), f)
    with pytest.raises(UserError, match="does not fit torchvision resnet18"):
        load_backbone("torchvision:resnet18", str(f))


def test_text_folder_without_a_model_is_a_user_error(tmp_path, tiny_bert_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="config"):
        load_backbone(f"hf:{empty}", "packaged")
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    shutil.copy(tiny_bert_dir / "config.json", config_only / "config.json")
    with pytest.raises(UserError, match="none"):
        load_backbone(f"hf:{config_only}", "packaged")
    assert load_backbone(f"hf:{config_only}", "none").feature_dim == 32


def test_missing_weights_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_backbone("timm:test_resnet", str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("spec", ["timm:test_vit", "torchvision:mobilenet_v2", "hf"])
def test_backbone_rebuilds_from_its_spec(spec, tiny_bert_dir):
    b = load_backbone(f"hf:{tiny_bert_dir}" if spec == "hf" else spec,
                      "packaged" if spec == "hf" else "none")
    again = backbone_from_spec(b.spec, b.preprocessing.to_dict())
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in b.state_dict().items()}
    assert again.preprocessing == b.preprocessing
    assert [g.name for g in again.layer_groups()] == [g.name for g in b.layer_groups()]


def test_rebuild_keeps_the_saved_preprocessing():
    b = load_backbone("torchvision:resnet18", "none")
    saved = ImagePreprocessing(input_size=176, resize_size=232, interpolation="bicubic")
    again = backbone_from_spec(b.spec, saved.to_dict())
    assert again.preprocessing == saved


# --------------------------------------------------------------------------------------------------
# Names and the offline check
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, hint",
    [("minilm-l66", "minilm-l6"), ("mobilenet-v2", "mobilenetv2"),
     ("timm:test_vitt", "test_vit"), ("torchvision:resnet180", "resnet18")],
)
def test_unknown_backbone_suggests_the_closest(name, hint):
    with pytest.raises(UserError) as info:
        load_backbone(name, "none")
    assert hint in str(info.value)


@pytest.mark.parametrize("name", ["resnet50", "bert-base-uncased", "vit-base-patch16-224",
                                  "timm:resnet18"])
def test_hub_backbone_offline_fails_fast(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(UserError) as info:
        load_backbone(name, "packaged")
    assert time.perf_counter() - start < 30
    msg = str(info.value)
    assert "hub" in msg and "minilm-l6" in msg and "none" in msg


def test_packaged_backbones_are_listed_offline():
    rows = {r["name"]: r for r in list_backbones()}
    for name in ("minilm-l6", "mobilenetv2", "efficientnet-lite0"):
        assert rows[name]["offline"] is True, rows[name]
    if os.environ.get("HF_HUB_OFFLINE"):
        assert rows["bert-base-uncased"]["offline"] is False


def test_text_length_follows_the_models_own_max_seq_length(tiny_bert_dir, tmp_path):
    """A sentence-transformers folder's max_seq_length is the length texts are cut at (what
    SetFit and sentence-transformers' encode use), capped at the position embeddings; a folder
    without one gets tlkit's default; data.max_length wins; each says why."""
    import shutil

    from tlkit.backbones.hf import DEFAULT_MAX_LENGTH

    plain = load_backbone(f"hf:{tiny_bert_dir}", "packaged")
    assert plain.preprocessing.max_length == min(DEFAULT_MAX_LENGTH, 64)
    assert "tlkit's default" in plain.length_said

    st = tmp_path / "st"
    shutil.copytree(tiny_bert_dir, st)
    (st / "sentence_bert_config.json").write_text('{"max_seq_length": 48}')
    own = load_backbone(f"hf:{st}", "packaged")
    assert own.preprocessing.max_length == 48
    assert own.length_said.startswith("texts cut at 48 tokens: the model's own max_seq_length")

    (st / "sentence_bert_config.json").write_text('{"max_seq_length": 4096}')
    capped = load_backbone(f"hf:{st}", "packaged")
    assert capped.preprocessing.max_length == 64 and "64 position embeddings" in capped.length_said

    given = load_backbone(f"hf:{st}", "packaged", max_length=20)
    assert given.preprocessing.max_length == 20 and "data.max_length" in given.length_said

    (st / "sentence_bert_config.json").write_text("not json")  # unreadable: the default
    assert load_backbone(f"hf:{st}", "packaged").preprocessing.max_length == 64
