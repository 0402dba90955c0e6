"""Reading images: which files count as images, finding unreadable ones, decoding to RGB."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from tlkit.data.types import ImageInput
from tlkit.errors import UserError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

_EXIF_ORIENTATION = 0x0112
# Below this many files a thread pool costs more than it saves.
_PARALLEL_FROM = 64


# Bounds on an image's size, checked from its header before it is decoded. The decoded size
# bounds memory at decode time (PIL's own bomb check allows 179 million pixels); the aspect
# ratio bounds it at resize time: resizing the short side of a 1 x 200,000 strip to 224 pixels
# asks for 224 x 44.8 million (about 39 GB). A photo, a scan or a panorama stays well inside.
MAX_PIXELS = 100_000_000
MAX_ASPECT = 20


def size_problem(width: int, height: int) -> str | None:
    """Why an image of this size is refused, or None."""
    if width < 1 or height < 1:
        return f"it is {width} x {height} pixels, empty"
    if width * height > MAX_PIXELS:
        return (f"it is {width:,} x {height:,} pixels, over the {MAX_PIXELS:,} tlkit decodes "
                "(a decompression bomb, or a scan to downsize first)")
    if max(width, height) > MAX_ASPECT * min(width, height):
        return (f"it is {width:,} x {height:,} pixels, an aspect ratio beyond {MAX_ASPECT}:1; "
                "resizing its short side to the model's size would need "
                f"{max(width, height) / min(width, height):,.0f} times that on the long side; "
                "crop it first")
    return None


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def image_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image, or None when it decodes.

    ``Image.verify()`` alone misses truncated JPEG, BMP, GIF and TIFF files (measured), so the
    file is decoded in full; a JPEG is decoded at 1/8 scale (``draft``), which still reads every
    byte of the stream at a third of the cost.
    """
    try:
        with Image.open(path) as image:
            too_big = size_problem(*image.size)  # from the header, before decoding
            if too_big is not None:
                return too_big
            if image.format == "JPEG":
                image.draft(image.mode, (1, 1))
            image.load()
    except FileNotFoundError:
        return "file not found"
    # Any failure to decode, whatever the codec raises (OSError, SyntaxError, ValueError,
    # DecompressionBombError...), makes the file unusable; the reason is all the caller needs.
    except Exception as error:  # noqa: BLE001
        return f"{type(error).__name__}: {error}"
    return None


def find_bad_images(paths: Sequence[Path]) -> dict[int, str]:
    """Index -> reason for each path that does not decode. Decoding releases the GIL, so threads help."""
    if len(paths) < _PARALLEL_FROM:
        problems = [image_problem(p) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            problems = list(pool.map(image_problem, paths, chunksize=32))
    return {i: reason for i, reason in enumerate(problems) if reason is not None}


def drop_bad_images(
    paths: Sequence[Path], policy: Literal["skip", "error"], where: str
) -> tuple[list[int], list[str]]:
    """Apply the ``on_bad_image`` policy: (indices of good paths, skipped file names).

    Raises UserError on the first bad file under ``error``, and under ``skip`` when none is good.
    """
    bad = find_bad_images(paths)
    if bad and policy == "error":
        first = min(bad)
        raise UserError(
            f"image {paths[first]} cannot be read ({bad[first]}); {len(bad)} of {len(paths)} images in "
            f"{where} are unreadable. Replace or remove them, or set data.on_bad_image: skip."
        )
    if paths and len(bad) == len(paths):
        example = paths[0]
        raise UserError(
            f"none of the {len(paths)} images in {where} can be read (e.g. {example}: {bad[0]}); "
            "check the files exist and that image paths are relative to the table's folder."
        )
    keep = [i for i in range(len(paths)) if i not in bad]
    return keep, [str(paths[i]) for i in sorted(bad)]


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB, the way the pretrained backbones saw their training images."""
    if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        # Phone photos store rotation as a tag; without this they train sideways.
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        # PIL's own convert clips 16-bit values at 255 (a white image); scale the range instead.
        array = np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8
        return Image.fromarray(array.astype(np.uint8)).convert("RGB")
    if mode == "F":
        array = np.asarray(image, dtype=np.float32)
        scale = 255.0 if array.size and float(array.max()) <= 1.0 else 1.0
        return Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8)).convert("RGB")
    if mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (mode == "P" and "transparency" in image.info):
        # Transparent pixels carry arbitrary colour (often black); lay them on white instead.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def array_to_image(array: np.ndarray) -> Image.Image:
    """A uint8 array, grey HxW (or HxWx1) or HxWx3 / HxWx4, as a PIL image."""
    if array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"image arrays must be HxW or HxWx3, got shape {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array))


def open_rgb(item: ImageInput | Image.Image) -> Image.Image:
    """Decode one input (path, uint8 array or PIL image) to RGB."""
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if isinstance(item, np.ndarray):
        too_big = size_problem(item.shape[1], item.shape[0]) if item.ndim >= 2 else None
        if too_big is not None:
            raise UserError(f"an image array cannot be used: {too_big}")
        return to_rgb(array_to_image(item))
    try:
        with Image.open(item) as image:
            too_big = size_problem(*image.size)
            if too_big is not None:
                raise UserError(f"image {item} cannot be used: {too_big}")
            image.load()
            rgb = to_rgb(image)
            # Leaving the block closes ``image``, and a closed PIL image can no longer be used.
            return rgb.copy() if rgb is image else rgb
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        # Files were checked when the data loaded; this one changed or vanished since.
        raise UserError(f"image {item} can no longer be read ({error}); restore it or reload the data.") from error


def shorter_side(item: ImageInput | Image.Image) -> int | None:
    """An image's shorter side in pixels, from a file's header (no decoding) or an array's
    shape; None for a file that no longer opens (it was checked when the data loaded)."""
    if isinstance(item, Image.Image):
        return min(item.size)
    if isinstance(item, np.ndarray):
        return int(min(item.shape[:2])) if item.ndim >= 2 else None
    try:
        with Image.open(item) as image:
            return min(image.size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
