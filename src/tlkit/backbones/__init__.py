"""Backbones behind one contract: ordered layer groups, feature size, preprocessing."""

from tlkit.backbones.base import Backbone, ImagePreprocessing, LayerGroup, TextPreprocessing
from tlkit.backbones.registry import KNOWN, backbone_from_spec, list_backbones, load_backbone

__all__ = [
    "KNOWN",
    "Backbone",
    "ImagePreprocessing",
    "LayerGroup",
    "TextPreprocessing",
    "backbone_from_spec",
    "list_backbones",
    "load_backbone",
]
