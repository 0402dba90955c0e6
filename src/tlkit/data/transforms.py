"""From a decoded input to the tensor a backbone expects, following the backbone's preprocessing.

Evaluation-style by default (resize, centre crop, normalise): the same transform serves
training, evaluation and prediction, so a model sees its inputs the same way everywhere. Training
may add random augmentation (``data.augment``); it draws from torch's global generator, whose state
every checkpoint saves, so a resumed run draws the same crops and flips. An image run's size is
data.image_size, else the one ``tlkit.data.resolution`` chooses from the training images.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from tlkit.backbones.base import ImagePreprocessing, Preprocessing, TextPreprocessing
from tlkit.data.images import open_rgb
from tlkit.data.resolution import ImageSize
from tlkit.data.types import DataSettings, ImageInput
from tlkit.errors import UserError

_INTERPOLATION = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


def resolve_preprocessing(prep: Preprocessing, cfg: DataSettings,
                          size: ImageSize | None = None) -> Preprocessing:
    """The backbone's preprocessing with the config's overrides (data.image_size, data.max_length)
    applied; this is what a run must save for prediction. ``size``: the image size a run chose
    (``tlkit.data.resolution``: the config's, else one that follows the training images); without
    it an image run takes data.image_size, else the backbone's own size."""
    if isinstance(prep, ImagePreprocessing):
        return _with_image_size(prep, cfg.image_size if size is None else size.size)
    return _with_max_length(prep, cfg.max_length)


def _with_image_size(prep: ImagePreprocessing, image_size: int | None) -> ImagePreprocessing:
    if image_size is None or image_size == prep.input_size:
        return prep
    if image_size < 1:
        raise UserError(f"data.image_size is {image_size}; give a positive size in pixels, e.g. 96.")
    # Keep the backbone's crop ratio (e.g. 224 of 256): the object fills the frame as in pretraining.
    resize = max(image_size, round(image_size * prep.resize_size / prep.input_size))
    return replace(prep, input_size=image_size, resize_size=resize)


def _with_max_length(prep: TextPreprocessing, max_length: int | None) -> TextPreprocessing:
    if max_length is None:
        return prep
    if max_length < 2:
        raise UserError(
            f"data.max_length is {max_length}; give at least 2 tokens (room for [CLS] and [SEP]), e.g. 128."
        )
    return replace(prep, max_length=max_length)


class ImageTransform:
    """Path / uint8 array / PIL image -> normalised float tensor of shape 3 x input_size x input_size.

    A class rather than a closure so that DataLoader workers can pickle it.
    """

    def __init__(self, prep: ImagePreprocessing, augment: str = "none") -> None:
        if augment not in ("none", "flip", "crop_flip"):
            raise UserError(f"data.augment {augment!r} is not one of none, flip, crop_flip")
        self.prep = prep
        self.augment = augment
        self._interpolation = _INTERPOLATION[prep.interpolation]

    def __call__(self, item: ImageInput | Image.Image) -> torch.Tensor:
        image = open_rgb(item)
        # Shorter side to resize_size, then the central input_size square, as timm evaluates.
        image = TF.resize(image, self.prep.resize_size, interpolation=self._interpolation, antialias=True)
        size = self.prep.input_size
        if self.augment == "crop_flip":
            # a random input_size square of the resized image instead of the central one
            w, h = image.size
            top = int(torch.randint(0, h - size + 1, (1,)))
            left = int(torch.randint(0, w - size + 1, (1,)))
            image = TF.crop(image, top, left, size, size)
        else:
            image = TF.center_crop(image, [size, size])
        if self.augment in ("flip", "crop_flip") and bool(torch.rand(()) < 0.5):
            image = TF.hflip(image)
        tensor = TF.pil_to_tensor(image).float().div_(255.0)
        return TF.normalize(tensor, list(self.prep.mean), list(self.prep.std))
