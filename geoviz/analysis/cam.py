"""Class activation maps with captum's ``LayerGradCam`` (Selvaraju et al. 2017): which pixels a
network's decision for a class rests on.

Grad-CAM at a layer with activations ``A_k`` (channels k): weights ``α_k`` = the spatial mean of
∂score/∂A_k, map = ReLU(Σ_k α_k A_k), upsampled bilinearly to the image and divided by its maximum.
The layer defaults to a zoo network's ``cam_layer`` (its last stage; MobileNetV2's ``conv_last``).
"""
from __future__ import annotations

import torch
from torch import nn

from .._utils import eval_mode
from ..inference import unwrap


def cam_layer(model: nn.Module) -> nn.Module:
    """The layer a model is explained at by default: its ``cam_layer``, else its last stage."""
    net = unwrap(model)
    if hasattr(net, "cam_layer"):
        return net.cam_layer
    names = getattr(net, "stage_names", ())
    if not names:
        raise ValueError(f"{type(net).__name__} has no stage_names: pass the layer to explain (a module of the model)")
    return net.get_submodule(names[-1])  # torchvision's stages may be nested ("features.18")


def grad_cam(model: nn.Module, images: torch.Tensor, target=None, *, layer: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(maps (B, H, W) in [0, 1] on the CPU, the explained classes (B,)); ``target`` None explains
    each image's predicted class. The model stays where it is (and in its mode); the images go to it."""
    from captum.attr import LayerAttribution, LayerGradCam

    net = unwrap(model)
    x = images.to(next(net.parameters()).device)
    with eval_mode(net):
        if target is None:
            with torch.no_grad():
                target = net(x).argmax(1)
        target = torch.as_tensor(target, device=x.device).reshape(-1).expand(len(x))
        attr = LayerGradCam(net, layer if layer is not None else cam_layer(net)).attribute(x, target=target, relu_attributions=True)
        up = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")[:, 0]
    up = up.detach().clamp_min(0).cpu()
    peak = up.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return up / peak, target.cpu()


__all__ = ["grad_cam", "cam_layer"]
