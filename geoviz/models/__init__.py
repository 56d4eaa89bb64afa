"""Model zoo: small CIFAR-style networks and torchvision models behind one registry."""

from . import mobilenet, resnet, small, surgery, vgg, wrn  # noqa: F401  (registers the builders)
from ._base import FeatureNet, block_layers, weight_layers
from ._registry import (
    build_model,
    list_models,
    load_backbone,
    load_model,
    load_state,
    register_model,
    save_model,
    timm_available,
)
from .loading import head_classes, imagenet_wnids, load_network, untrained_copy
from .torchvision_models import hub_weights_file

__all__ = [
    "FeatureNet",
    "block_layers",
    "weight_layers",
    "build_model",
    "list_models",
    "load_backbone",
    "load_model",
    "load_state",
    "register_model",
    "save_model",
    "hub_weights_file",
    "timm_available",
    "load_network",
    "untrained_copy",
    "head_classes",
    "imagenet_wnids",
]
