"""head.normalize: the head reads the pooled features scaled to unit length where they are
compared by cosine (a sentence-transformers encoder under the convex solve, contrastive's trained
backbone); the solved head, the saved model, predict and the exports agree on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tlkit.assemble import head_normalization
from tlkit.backbones.hf import cosine_trained
from tlkit.config import HeadSettings
from tlkit.heads import build_head, head_inputs, normalizes
from tlkit.train.head_solver import linear_of

MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
           {"idx": 1, "name": "1", "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling"},
           {"idx": 2, "name": "2", "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize"}]


def test_a_normalizing_head_reads_directions_only() -> None:
    torch.manual_seed(0)
    head = build_head(8, 3, normalize=True).eval()
    x = torch.randn(5, 8)
    torch.testing.assert_close(head(x), head(7.5 * x))
    assert normalizes(head) and linear_of(head) is head[-1]
    plain = build_head(8, 3).eval()
    assert not normalizes(plain) and not torch.allclose(plain(x), plain(7.5 * x))
    # what the convex solver is given is what the linear layer sees
    z = head_inputs(x.numpy() * 3.0, True)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(head[-1](torch.as_tensor(z, dtype=torch.float32)).numpy(),
                                   head(x).numpy(), rtol=1e-5, atol=1e-6)


def _hs(**kw: object) -> HeadSettings:
    base = {"type": "linear", "hidden_size": 16, "dropout": 0.0, "normalize": "auto",
            "freeze_strategy": "all_frozen", "head_solver": "convex"}
    return HeadSettings(**{**base, **kw})


@pytest.mark.parametrize("kw, cosine, normalized", [
    ({}, True, True),                                      # a sentence encoder, solved head
    ({}, False, False),                                    # an encoder not trained for cosine
    ({"head_solver": "sgd"}, True, False),                 # SGD head: unchanged
    ({"freeze_strategy": "top_n_unfrozen"}, True, False),  # fine-tuning: unchanged
    ({"freeze_strategy": "contrastive"}, False, True),     # its loss trains the cosine geometry
    ({"type": "mlp"}, True, False),
    ({"normalize": False, "freeze_strategy": "contrastive"}, True, False),
    ({"normalize": True, "freeze_strategy": "none"}, False, True),
])
def test_auto_normalizes_where_the_features_are_compared_by_cosine(kw, cosine, normalized) -> None:
    why = head_normalization(_hs(**kw), SimpleNamespace(cosine=cosine))  # type: ignore[arg-type]
    assert (why is not None) == normalized
    # a token task's rows are per-word states, not sentence vectors: auto leaves them as they are
    token = head_normalization(_hs(**kw), SimpleNamespace(cosine=cosine),  # type: ignore[arg-type]
                               "token_classification")
    assert (token is not None) == (normalized and kw.get("normalize") is True)


def test_a_sentence_transformers_folder_with_normalize_is_cosine_trained(tmp_path: Path) -> None:
    (tmp_path / "modules.json").write_text(json.dumps(MODULES))
    assert cosine_trained(str(tmp_path))
    (tmp_path / "modules.json").write_text(json.dumps(MODULES[:2]))  # no Normalize module
    assert not cosine_trained(str(tmp_path))
    for bad in ("{not json", "[1, 2]", "", "\ufeff[]"):
        (tmp_path / "modules.json").write_text(bad)
        assert not cosine_trained(str(tmp_path))
    assert not cosine_trained(str(tmp_path / "missing"))
    from tlkit.backbones.packaged import minilm_folder

    folder = minilm_folder()
    assert folder is not None and cosine_trained(str(folder))  # all-MiniLM-L6-v2 ends with it


@pytest.fixture(scope="module")
def cosine_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert_no_dropout_dir: Path
               ) -> Path:
    """all_frozen on a tiny BERT that says it is a sentence-transformers model with Normalize."""
    from tlkit.config import validate
    from tlkit.run import fit_run

    tmp = tmp_path_factory.mktemp("cosine")
    model = tmp / "st"
    shutil.copytree(tiny_bert_no_dropout_dir, model)
    (model / "modules.json").write_text(json.dumps(MODULES))
    rng = np.random.default_rng(0)
    good, bad = ["great", "fine", "lovely"], ["awful", "dull", "poor"]
    rows = ["text,label"]
    for i in range(60):
        words = list(rng.choice(["the", "film", "was", "a", "plot"], int(rng.integers(1, 6))))
        words.append(str(rng.choice(good if i % 2 else bad)))
        rows.append(f"{' '.join(words)},{'pos' if i % 2 else 'neg'}")
    (tmp / "texts.csv").write_text("\n".join(rows) + "\n")
    raw = {"transfer_config": {"source_model": f"hf:{model}", "pretrained_weights": "packaged",
                               "freeze_strategy": "all_frozen", "epochs": 1,
                               "device": "cpu"},
           "data": {"source": str(tmp / "texts.csv"), "max_length": 16, "test_fraction": 0.2}}
    fit_run(validate(raw), tmp / "run")
    return tmp / "run"


@pytest.mark.slow  # a tiny BERT fit: about 3 s
def test_the_saved_model_predict_and_the_plan_say_the_head_normalizes(cosine_run: Path) -> None:
    from tlkit.run import predict_run
    from tlkit.saved import load_model

    meta = json.loads((cosine_run / "model" / "model.json").read_text())
    assert meta["head"]["normalize"] is True
    assert "scaled to unit length" in (cosine_run / "plan.txt").read_text()
    saved = load_model(cosine_run / "model")
    assert normalizes(saved.model.head)
    # predict serves the normalizing head: its probabilities are the saved model's on the
    # features scaled to unit length
    texts = ["the film was great", "a dull plot"]
    rows = predict_run(cosine_run, texts, calibrated=False)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(cosine_run / "model" / "tokenizer"))
    with torch.no_grad():
        pooled = saved.model.backbone(dict(tok(texts, padding=True, return_tensors="pt")))
        unit = torch.nn.functional.normalize(pooled, dim=-1)
        want = torch.softmax(saved.model.head[-1](unit), dim=1).numpy()
    got = np.array([list(r["probabilities"].values()) for r in rows])
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.slow
def test_the_hf_and_onnx_exports_normalize_as_the_run_does(cosine_run: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    from test_export import _assert_agrees, _tlkit_probabilities, hf_export_probabilities

    from tlkit.cli import main

    for fmt in ("hf", "onnx"):
        assert main(["export", str(cosine_run), "--format", fmt]) == 0, capsys.readouterr().err
        _assert_agrees(capsys.readouterr().out)  # the export's own check: <= 1e-4 on val
    texts = ["the film was great", "a dull plot, the film was poor", "fine"]
    got, model = hf_export_probabilities(cosine_run / "export" / "hf", texts)
    assert model.config.head_normalize is True
    assert np.abs(got - _tlkit_probabilities(cosine_run, texts)).max() <= 1e-4
