"""Class activation maps with captum's ``LayerGradCam`` (Selvaraju et al. 2017): which pixels a
network's decision for a class rests on.

Grad-CAM at a layer with activations ``A_k`` (channels k): weights ``α_k`` = the spatial mean of
∂score/∂A_k, map = ReLU(Σ_k α_k A_k), upsampled bilinearly to the image and divided by its maximum.
The layer defaults to a zoo network's ``cam_layer`` (its last stage; MobileNetV2's ``conv_last``),
else the last block of any network (``models.block_layers``). A transformer layer's tokens are laid
on their grid first (``capture.as_maps``), as pytorch-grad-cam's reshape transform does, and a
ViT is explained at the input of its last block by default: the patch tokens a last block puts out
never reach the class token, so their gradients are zero.
"""

from __future__ import annotations

import torch
from torch import nn

from .._utils import eval_mode
from ..capture import as_maps, prefix_tokens_of
from ..inference import unwrap
from ..models import block_layers


def _is_head(m: nn.Module) -> bool:
    return isinstance(m, (nn.Linear, nn.Identity, nn.Dropout)) or (
        isinstance(m, nn.Sequential) and any(isinstance(c, nn.Linear) for c in m)
    )


def _is_transformer(net: nn.Module) -> bool:
    return (prefix_tokens_of(net) or 0) > 0


def cam_layer(model: nn.Module) -> nn.Module:
    """The layer a model is explained at by default: its ``cam_layer``, else its last stage (when
    that is not the classifier), else its last block (a transformer's last but one)."""
    net = unwrap(model)
    if hasattr(net, "cam_layer"):
        return net.cam_layer
    names = getattr(net, "stage_names", ())
    if names and not _is_head(net.get_submodule(names[-1])) and not _is_transformer(net):
        return net.get_submodule(names[-1])  # torchvision's stages may be nested ("features.18")
    blocks = block_layers(net)
    if _is_transformer(net):
        while blocks and isinstance(net.get_submodule(blocks[-1]), nn.LayerNorm):
            blocks = blocks[:-1]  # the final norm is not a block
        blocks = blocks[:-1] or blocks  # the input of the last block
    if not blocks:
        raise ValueError(f"{type(net).__name__} has no blocks to explain at: pass layer= (a module of the model)")
    return net.get_submodule(blocks[-1])


class _Grid(nn.Module):
    """Stands for a token layer's output laid out as maps, so captum can attribute to it."""

    def forward(self, maps):
        return maps


def _token_grid(layer: nn.Module, image_size, prefix_tokens):
    """A forward hook that passes a token (B, N, D) or channels-last (B, H, W, C) layer output
    through a ``_Grid`` as (B, C, h, w) maps and back (values unchanged); returns (the grid module,
    the hook handle). Conv maps pass untouched and the grid never runs."""
    grid = _Grid()

    def hook(module, args, out):
        if not torch.is_tensor(out) or out.dim() not in (3, 4):
            return None
        maps = as_maps(out, image_size, prefix_tokens)
        if out.dim() == 4:
            return None if maps is out else grid(maps).permute(0, 2, 3, 1)
        if maps.shape[-1] == 1 and maps.shape[-2] == out.shape[1]:
            return None  # tokens without a grid: leave them
        skip = out.shape[1] - maps.shape[-2] * maps.shape[-1]
        return torch.cat([out[:, :skip], grid(maps).flatten(2).transpose(1, 2)], 1)

    return grid, layer.register_forward_hook(hook)


def grad_cam(
    model: nn.Module, images: torch.Tensor, target=None, *, layer: nn.Module | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(maps (B, H, W) in [0, 1] on the CPU, the explained classes (B,)); ``target`` None explains
    each image's predicted class. The model stays where it is (and in its mode); the images go to it."""
    from captum.attr import LayerAttribution, LayerGradCam

    net = unwrap(model)
    x = images.to(next(net.parameters()).device)
    layer = layer if layer is not None else cam_layer(net)
    grid, handle = _token_grid(layer, tuple(x.shape[-2:]), prefix_tokens_of(net))
    try:
        with eval_mode(net):
            if target is None:
                with torch.no_grad():
                    target = net(x).argmax(1)
            target = torch.as_tensor(target, device=x.device).reshape(-1).expand(len(x))
            uses_grid = _ran(net, grid, x[:1])
            attr = LayerGradCam(net, grid if uses_grid else layer).attribute(x, target=target, relu_attributions=True)
            up = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")[:, 0]
    finally:
        handle.remove()
    up = up.detach().clamp_min(0).cpu()
    peak = up.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return up / peak, target.cpu()


def _ran(net: nn.Module, module: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``module`` runs in a forward of ``x``."""
    seen = []
    h = module.register_forward_hook(lambda *a: seen.append(1))
    try:
        with torch.no_grad():
            net(x)
    finally:
        h.remove()
    return bool(seen)


__all__ = ["grad_cam", "cam_layer"]
