"""Bad images: corrupt, truncated, empty, decompression bombs, extreme aspect ratios, images
damaged after the data loaded; odd modes that are valid. A bad image is skipped and counted, or
(``on_bad_image: error``) exit 2 naming it; never a traceback or exhausted memory. Each case is
in docs/reliability.md."""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from user_runs import cli, config, default_config, error_line

from tlkit.errors import UserError


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A PNG whose header claims side x side pixels (400 MP): a decompression bomb, in 100
    bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def bad_image(folder: Path, kind: str) -> Path:
    if kind == "corrupt":
        p = folder / "corrupt.jpg"
        p.write_bytes(os.urandom(2000))
    elif kind == "truncated":
        p = folder / "truncated.png"
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)).save(p)
        p.write_bytes(p.read_bytes()[:600])
    elif kind == "zero_byte":
        p = folder / "empty.png"
        p.write_bytes(b"")
    else:
        p = bomb_png(folder / "bomb.png")
    return p


def _folder(tmp: Path, per_class: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp / "imgs" / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray((rng.random((12, 12)) * 255).astype(np.uint8)).save(
                tmp / "imgs" / c / f"{i}.png")
    return tmp / "imgs"


BAD = ["corrupt", "truncated", "zero_byte", "decompression_bomb"]


REASON = {"corrupt": "UnidentifiedImageError", "truncated": "truncated",
          "zero_byte": "UnidentifiedImageError", "decompression_bomb": "DecompressionBombError"}


@pytest.mark.parametrize("kind", BAD)
def test_a_bad_image_under_on_bad_image_error_exits_2_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    root = _folder(tmp_path)
    bad = bad_image(root / "a", kind)
    cfg = config(tmp_path, source=str(root), limit=None, data="  on_bad_image: error\n")
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run")
    assert code == 2
    msg = error_line(err)
    assert str(bad) in msg and REASON[kind] in msg and "on_bad_image: skip" in msg


def test_bad_images_under_the_default_skip_are_counted_and_the_run_finishes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _folder(tmp_path)
    for kind in BAD:
        bad_image(root / "b", kind)
    cfg = config(tmp_path, source=str(root), limit=None,
                 data="  val_fraction: 0.25\n  test_fraction: 0.25\n")
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run", "--no-report")
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped_images"] == summary["data"]["skipped_images"] == 4


def test_a_decompression_bomb_is_refused_without_decoding_it(tmp_path: Path) -> None:
    from tlkit.data.images import image_problem

    t0 = time.perf_counter()
    problem = image_problem(bomb_png(tmp_path / "bomb.png"))
    assert problem is not None and "DecompressionBombError" in problem
    assert time.perf_counter() - t0 < 1  # read from the header, never decoded


def test_odd_mode_images_train_as_rgb_with_nothing_skipped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _folder(tmp_path, per_class=10)
    Image.new("CMYK", (12, 12), (0, 255, 0, 0)).save(root / "a" / "cmyk.jpg")
    Image.fromarray(np.full((12, 12), 40000, np.uint16)).save(root / "a" / "deep.png")  # I;16
    pal = Image.new("P", (12, 12), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.save(root / "b" / "palette.png", transparency=0)
    Image.new("RGBA", (12, 12), (0, 0, 255, 128)).save(root / "b" / "rgba.png")
    assert Image.open(root / "a" / "deep.png").mode.startswith("I")
    cfg = config(tmp_path, source=str(root), limit=None, epochs=1,
                 data="  on_bad_image: error\n  val_fraction: 0.25\n  test_fraction: 0.25\n")
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run", "--no-report")
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped_images"] == 0


@pytest.mark.parametrize("kind", BAD)
def test_an_image_damaged_after_the_data_loaded_is_a_user_error(tmp_path: Path, kind: str) -> None:
    """The files were checked when the data loaded; one replaced during training is named."""
    from tlkit.backbones.base import ImagePreprocessing
    from tlkit.data.transforms import ImageTransform

    good = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(good)
    transform = ImageTransform(ImagePreprocessing(input_size=8, resize_size=8))
    assert transform(good).shape == (3, 8, 8)
    bad = bad_image(tmp_path, kind)
    bad.replace(good)
    with pytest.raises(UserError, match="x.png can no longer be read"):
        transform(good)


def image_folder(root: Path, per_class: int = 20) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, level in (("dark", 40), ("light", 200)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            px = np.clip(rng.normal(level, 20, (12, 12)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / label / f"{i:02d}.png")
    return root


def strip_png(path: Path, width: int = 200_000, height: int = 1) -> Path:
    """A 1 x 200,000 PNG: a few hundred bytes that passes PIL's decompression-bomb check."""
    from PIL import Image

    Image.new("L", (width, height), 128).save(path, optimize=True)
    assert path.stat().st_size < 2000
    return path


@pytest.mark.slow  # two fits: a few seconds each
def test_an_image_of_extreme_aspect_ratio_is_a_bad_image_in_fit_and_in_predict(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = image_folder(tmp_path / "imgs")
    strip = strip_png(folder / "dark" / "strip.png")
    cfg = default_config(tmp_path, str(folder), data="  test_fraction: 0.2\n").read_text()
    (tmp_path / "skip.yaml").write_text(cfg.replace("  limit: 120\n", ""))
    code, err = cli(capsys, "fit", tmp_path / "skip.yaml", "--out", tmp_path / "run",
                    "--no-report")
    assert code == 0, err
    import json

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped_images"] == 1
    (tmp_path / "error.yaml").write_text(cfg.replace("  limit: 120\n", "  on_bad_image: error\n"))
    code, err = cli(capsys, "fit", tmp_path / "error.yaml", "--out", tmp_path / "run2")
    assert code == 2 and "strip.png" in err and "aspect ratio" in error_line(err)
    code, err = cli(capsys, "predict", tmp_path / "run", strip)
    assert code == 2 and "aspect ratio" in error_line(err)


def test_the_size_bounds_name_what_is_wrong() -> None:
    from tlkit.data.images import MAX_PIXELS, size_problem

    assert size_problem(224, 224) is None and size_problem(4000, 3000) is None
    assert size_problem(12_000, 1_000) is None  # a 12:1 panorama
    assert "aspect ratio" in (size_problem(1, 200_000) or "")
    assert "over the" in (size_problem(20_000, 20_000) or "")
    assert size_problem(MAX_PIXELS // 10_000, 10_000) is None
