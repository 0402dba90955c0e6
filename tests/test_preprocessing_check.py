"""The preprocessing check: inputs the model would see, compared with what its backbone expects.
tlkit's own preprocessing of real images passes; the usual mistakes are each named."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from tlkit.backbones.base import ImagePreprocessing, TextPreprocessing
from tlkit.cli import main
from tlkit.data.collate import ImageCollate, TextCollate, load_tokenizer
from tlkit.data.packaged import FASHION_MNIST_DIR, load_packaged
from tlkit.data.transforms import ImageTransform
from tlkit.diagnose.preprocessing import check_images, check_preprocessing, check_text
from tlkit.errors import UserError

# A small input size keeps the transforms cheap; the statistics do not depend on it.
PREP = ImagePreprocessing(input_size=64, resize_size=73)


def photos() -> list[np.ndarray]:
    """Natural photos that ship with scikit-learn (a temple, a flower), with crops of them."""
    from sklearn.datasets import load_sample_images

    images = load_sample_images().images
    crops = [img[y:y + 200, x:x + 200] for img in images for y in (0, 200) for x in (0, 220, 440)]
    return [*images, *crops]


def grey_images() -> list[np.ndarray]:
    """Fashion-MNIST where it is installed (mostly black backgrounds), else the digits."""
    data = load_packaged("fashion_mnist" if FASHION_MNIST_DIR.is_dir() else "digits")
    return [data.inputs[i] for i in range(0, 640, 10)]


@pytest.fixture(scope="module")
def batches() -> dict[str, torch.Tensor]:
    transform = ImageTransform(PREP)
    return {name: torch.stack([transform(x) for x in images])
            for name, images in (("photos", photos()), ("grey", grey_images()))}


def checks(findings: list) -> list[str]:
    return [f.check for f in findings]


@pytest.mark.parametrize("kind", ["photos", "grey"])
def test_tlkit_preprocessing_of_real_images_gives_no_finding(batches, kind: str) -> None:
    assert check_images(batches[kind], PREP) == []


def _raw(batch: torch.Tensor) -> torch.Tensor:
    """The [0, 1] pixels behind a batch normalised with PREP."""
    mean = torch.tensor(PREP.mean).view(1, 3, 1, 1)
    std = torch.tensor(PREP.std).view(1, 3, 1, 1)
    return batch * std + mean


MISTAKES = {
    "normalised_twice": lambda b: TF.normalize(b, list(PREP.mean), list(PREP.std)),
    "not_normalised": _raw,
    "not_normalised_0_255": lambda b: _raw(b) * 255,
    "normalised_0_255": lambda b: TF.normalize(_raw(b) * 255, list(PREP.mean), list(PREP.std)),
}
WORDS = {"normalised_twice": "normalised twice", "not_normalised": "unnormalised",
         "not_normalised_0_255": "raw 0-255", "normalised_0_255": "0-255 pixels normalised"}


@pytest.mark.parametrize("kind", ["photos", "grey"])
@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_each_normalisation_mistake_is_named(batches, kind: str, mistake: str) -> None:
    findings = check_images(MISTAKES[mistake](batches[kind]), PREP)
    assert checks(findings) == [mistake]
    assert WORDS[mistake] in findings[0].what
    assert "normalise" in findings[0].fix or "255" in findings[0].fix


def test_resolution_and_channel_count_are_checked(batches) -> None:
    small = torch.nn.functional.interpolate(batches["photos"], size=24, mode="bilinear")
    found = check_images(small, PREP)
    assert checks(found) == ["resolution"]
    assert "24x24" in found[0].what and "data.image_size: 64" in found[0].fix
    # a little larger than pretraining is fine
    assert check_images(torch.nn.functional.interpolate(batches["photos"], size=80), PREP) == []
    grey = batches["grey"][:, :1]
    assert checks(check_images(grey, PREP)) == ["channels"]


# ---------------------------------------------------------------------------------------------
# text


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir: Path):
    return load_tokenizer(str(tiny_bert_dir))


TEXTS = [f"the film was {w} and the plot {v}" for w in ("great", "dull", "fine", "poor")
         for v in ("moved", "dragged", "worked", "failed")]


def test_matching_tokenizer_and_text_give_no_finding(tokenizer) -> None:
    prep = TextPreprocessing(max_length=32)
    assert check_text(TEXTS, tokenizer, tokenizer.vocab_size, prep) == []


def test_a_tokenizer_whose_ids_exceed_the_model_vocab_is_found(tokenizer) -> None:
    found = check_text(TEXTS, tokenizer, 1000, TextPreprocessing(max_length=32))
    assert checks(found) == ["vocab_mismatch"]
    assert "1000 rows" in found[0].what and "another model" in found[0].what


def test_unknown_tokens_and_truncation_are_found(tokenizer) -> None:
    emoji = [f"\U0001f642\U0001f642 \U0001f680 {t}" for t in TEXTS]
    found = check_text(emoji, tokenizer, tokenizer.vocab_size, TextPreprocessing(max_length=8))
    assert checks(found) == ["unknown_tokens", "truncated"]
    assert "unknown token" in found[0].what
    assert "data.max_length" in found[1].fix
    assert [f.severity for f in found] == ["warn", "info"]


def test_refuse_lets_informational_findings_through(tokenizer) -> None:
    class Text:
        preprocessing = TextPreprocessing(max_length=8)

    logged: list[str] = []
    data = [(t, torch.tensor(0)) for t in TEXTS]
    found = check_preprocessing(Text(), TextCollate(tokenizer, 8), data, "refuse", logged.append)
    assert checks(found) == ["truncated"] and "(info)" in logged[0]


# ---------------------------------------------------------------------------------------------
# policies


class _Backbone:
    preprocessing = PREP


def _dataset(batch: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x, torch.tensor(0)) for x in batch]


def test_policies_warn_refuse_off(batches) -> None:
    bad = _dataset(MISTAKES["normalised_twice"](batches["photos"]))
    logged: list[str] = []
    found = check_preprocessing(_Backbone(), ImageCollate(), bad, "warn", logged.append)
    assert checks(found) == ["normalised_twice"] and len(logged) == 1
    assert "normalised twice" in logged[0]
    with pytest.raises(UserError, match="check_preprocessing: warn to train anyway"):
        check_preprocessing(_Backbone(), ImageCollate(), bad, "refuse", logged.append)
    assert check_preprocessing(_Backbone(), ImageCollate(), bad, "off", logged.append) == []
    good = _dataset(batches["photos"])
    assert check_preprocessing(_Backbone(), ImageCollate(), good, "refuse", logged.append) == []
    assert len(logged) == 1


def test_the_check_leaves_torch_random_state_as_it_was(batches) -> None:
    class Drawing(list):  # an augmenting dataset draws from torch's generator per item
        def __getitem__(self, i):
            torch.rand(3)
            return super().__getitem__(i)

    torch.manual_seed(0)
    before = torch.get_rng_state()
    check_preprocessing(_Backbone(), ImageCollate(), Drawing(_dataset(batches["photos"])), "warn",
                        lambda m: None)
    assert torch.equal(torch.get_rng_state(), before)


# ---------------------------------------------------------------------------------------------
# through `tlkit fit`


@pytest.fixture(scope="module")
def small_vocab_bert(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BERT whose embedding has 1000 rows, with the 30522-token MiniLM tokenizer beside it:
    the tokenizer of another model."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("small_vocab_bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=48,
                         max_position_embeddings=64)).save_pretrained(folder)
    for f in tiny_bert_dir.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(f, folder / f.name)
    return folder


def test_refuse_makes_fit_exit_2_before_anything_is_written(tmp_path: Path, capsys,
                                                           small_vocab_bert: Path) -> None:
    rows = ["text,label"] + [f"{t},{'pos' if i % 2 else 'neg'}" for i, t in enumerate(TEXTS * 3)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""\
transfer_config:
  source_model: hf:{small_vocab_bert}
  pretrained_weights: packaged
  epochs: 1
  batch_size: 16
  device: cpu
data:
  source: {tmp_path / 't.csv'}
  max_length: 32
diagnostics:
  check_preprocessing: refuse
""")
    out = tmp_path / "run"
    assert main(["fit", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "1000 rows" in err and "tokenizer" in err
    assert "set diagnostics.check_preprocessing: warn to train anyway" in err
    assert not (out / "config.yaml").exists() and not (out / "summary.json").exists()


def test_warn_logs_the_finding_and_the_run_records_it(tmp_path: Path) -> None:
    from tlkit.config import validate
    from tlkit.run import fit_run

    # test_efficientnet was pretrained at 160 pixels; 32 is far from it
    raw = {"transfer_config": {"source_model": "timm:test_efficientnet",
                               "pretrained_weights": "none", "freeze_strategy": "all_frozen",
                               "epochs": 1, "batch_size": 32, "device": "cpu"},
           "data": {"source": "digits", "image_size": 32, "limit": 100}}
    stages: list[str] = []
    summary = fit_run(validate(raw), tmp_path / "run",
                      event=lambda kind, info: stages.append(info.get("what", "")))
    found = summary["preprocessing_findings"]
    assert [f["check"] for f in found] == ["resolution"]
    assert "32x32" in found[0]["what"] and "160x160" in found[0]["what"]
    assert any(s.startswith("preprocessing check (info): the images are 32x32") for s in stages)
