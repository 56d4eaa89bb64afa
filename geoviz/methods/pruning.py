"""Redundancy-aware pruning in a decorrelated intermediate space (Xie, Neural Computation 2020).

The paper (its abstract is all we could read): a conv layer's input and output are mapped by an
orthogonal transformation to an intermediate space in which the neurons are decorrelated; neurons
are evaluated and pruned there. What is ours (the paper's details were not reachable; see
PAPERS.md): the orthogonal transformation is the PCA basis of the layer's responses on a
calibration set, a direction's score is its explained energy (its eigenvalue), and pruning keeps r
directions by re-expressing the layer *exactly* in that basis as a low-rank pair:

- ``mode="outputs"`` (decorrelate the outputs): with BatchNorm folded into the conv
  (``y = W'∗x + b'``, what the next layer sees), the covariance of y is ``U Λ Uᵀ``; keeping U_r gives
  ``ŷ = U_r (U_rᵀ W' ∗ x + U_rᵀ b') + (m − U_r U_rᵀ m)``: a k×k conv into r channels, then a 1×1
  conv (with bias) back out. ``E‖y − ŷ‖² = Σ_{i>r} λ_i`` on the calibration data. The BatchNorm
  stays, set to re-normalise: its running statistics are ŷ's (mean m, variance diag(U_r Λ_r U_rᵀ))
  and its affine map undoes them, so it is the identity in eval mode and keeps fine-tuning as well
  conditioned as the original (without it, SGD at the base's fine-tuning rate diverged: the folded
  scales are large).
- ``mode="inputs"`` (decorrelate the inputs, the previous layer's output space): with the
  uncentred second moment of the input ``E[x xᵀ] = V Λ Vᵀ``, ``x ≈ V_r V_rᵀ x``, so a 1×1 conv into r
  channels (``V_rᵀ``) then the k×k conv ``W V_r``, the BatchNorm after it unchanged. No centring:
  zero padding then stays exact.

At full rank both pairs reproduce the layer (tested to 1e-4). Ranks come from an energy threshold
per layer (``energy=``) or from a FLOPs target for the whole model (``speedup=``), allocated
greedily over all layers' directions by explained-energy fraction per FLOP (ours; a Lagrangian
allocation over the layers' energy curves, since the eigenvalues fall within each layer). A layer
whose low-rank pair would cost as much as the layer keeps its original form.

Moments are streamed (a C×C sum per layer over every position of every calibration image), so
memory does not grow with the calibration set.

Baselines, not rewritten: Torch-Pruning's L1 filter-norm (``MagnitudeImportance(p=1)``) and FPGM
structured pruning, at the same FLOPs (the channel ratio found by bisection on measured FLOPs).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .._utils import preserved_modes, progress_bar, resolve_device, unknown_name_message
from ..costs import flop_counts, measure_flops, measure_latency, model_costs  # noqa: F401  (re-exported)
from ..inference import as_loader, unwrap
from ..models.surgery import apply_lowrank, channel_shapes, get_module

MODES = ("outputs", "inputs")
BASELINES = ("l1", "fpgm")


# ----------------------------------------------------------------------------- layers
def _bn_sibling(name: str, modules: dict) -> str | None:
    parent, _, leaf = name.rpartition(".")
    if not leaf.startswith("conv"):
        return None
    bn = (parent + "." if parent else "") + "bn" + leaf[4:]
    return bn if isinstance(modules.get(bn), nn.BatchNorm2d) else None


def prunable_layers(model: nn.Module, layers=None, *, fold_bn: bool = True) -> dict[str, str | None]:
    """``{conv path: the BatchNorm folded into it}``. By default every k×k (k > 1) convolution that
    sees more than 3 input channels (not the stem): the layers worth a low-rank pair."""
    modules = dict(model.named_modules())
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    if layers is None:
        layers = [
            n
            for n in convs
            if modules[n].kernel_size != (1, 1) and modules[n].groups == 1 and modules[n].in_channels > 3
        ]
    out = {}
    for name in layers:
        if name not in modules:
            raise KeyError(unknown_name_message("layer", name, convs))
        m = modules[name]
        if not isinstance(m, nn.Conv2d):
            raise ValueError(
                f"layer {name!r} is a {type(m).__name__}, not a Conv2d: only "
                f"convolutions can be re-expressed; pick from {convs[:8]}..."
            )
        if m.groups != 1:
            raise ValueError(
                f"layer {name!r} is a grouped/depthwise convolution (groups={m.groups}): its channels "
                "do not mix, so there is no channel space to decorrelate; leave it out of `layers`"
            )
        bn = _bn_sibling(name, modules)
        if fold_bn and bn is None:
            raise ValueError(
                f"layer {name!r} has no BatchNorm beside it (expected a sibling named like "
                f"'bn{name.rpartition('.')[2][4:]}') to fold; pass fold_bn=False to re-express the convolution alone"
            )
        out[name] = bn if fold_bn else None
    if not out:
        raise ValueError(
            "no prunable convolution in the model (k×k, groups=1, more than 3 input channels); name them in `layers`"
        )
    return out


def folded_weights(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) in float64 of the conv with the (eval-mode) BatchNorm after it folded in."""
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64)
    if bn is None:
        return w, b
    scale = bn.weight.detach().double() / (bn.running_var.double() + bn.eps).sqrt()
    return w * scale[:, None, None, None], (b - bn.running_mean.double()) * scale + bn.bias.detach().double()


# ----------------------------------------------------------------------------- spectra
@dataclass
class LayerSpectrum:
    """A layer's decorrelating basis: eigenvalues (descending) and eigenvectors of its responses'
    covariance (``outputs``) or its inputs' second moment (``inputs``), plus what FLOPs need."""

    name: str
    bn: str | None
    mode: str
    eigvals: np.ndarray
    eigvecs: np.ndarray  # (C, C), columns
    mean: np.ndarray
    cin: int
    cout: int
    kernel_area: int  # kh · kw
    in_hw: int
    out_hw: int
    n_positions: int

    @property
    def channels(self) -> int:
        return len(self.eigvals)

    def energy(self) -> np.ndarray:
        """Cumulative explained-energy fraction after keeping 1, 2, ..., C directions."""
        lam = np.clip(self.eigvals, 0, None)
        return np.cumsum(lam) / max(lam.sum(), 1e-300)

    def rank_for(self, threshold: float) -> int:
        return int(min(self.channels, np.searchsorted(self.energy(), threshold - 1e-12) + 1))

    def flops(self, r: int | None = None) -> int:
        """FLOPs per image (2 per multiply–add, as FlopCounterMode counts) of the layer (r=None)
        or of its low-rank pair at rank r."""
        k2 = self.kernel_area
        if r is None:
            return 2 * self.cout * self.cin * k2 * self.out_hw
        if self.mode == "outputs":
            return 2 * r * self.cin * k2 * self.out_hw + 2 * self.cout * r * self.out_hw
        return 2 * r * self.cin * self.in_hw + 2 * self.cout * r * k2 * self.out_hw

    def break_even(self) -> int:
        """The smallest rank at which the pair costs as much as the layer (kept as it is from there)."""
        full = self.flops()
        return next((r for r in range(1, self.channels + 1) if self.flops(r) >= full), self.channels)


def layer_spectra(
    model: nn.Module,
    data,
    layers: dict[str, str | None],
    mode: str = "outputs",
    *,
    max_images: int | None = 512,
    batch_size: int = 128,
    device="auto",
    progress: bool = True,
) -> dict[str, LayerSpectrum]:
    """Stream ``data`` (images, or (image, label) pairs) through ``model`` in eval mode and return
    each layer's :class:`LayerSpectrum`. Outputs are read after the folded BatchNorm (its output is
    the folded conv's), inputs before the conv. The model is given back in the mode and on the
    device it came in."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; allowed: {MODES}")
    with preserved_modes(unwrap(model)) as net:
        return _stream_spectra(
            net.to(resolve_device(device)).eval(), data, layers, mode, max_images, batch_size, progress
        )


def _stream_spectra(net, data, layers, mode, max_images, batch_size, progress) -> dict[str, LayerSpectrum]:
    dev = next(net.parameters()).device
    modules = dict(net.named_modules())
    sums = {}

    def accumulate(name, t):
        y = t.detach().double().transpose(0, 1).reshape(t.shape[1], -1)  # (C, positions)
        s = sums.setdefault(name, {"n": 0, "s": 0.0, "ss": 0.0, "hw": t.shape[-2] * t.shape[-1]})
        s["n"] += y.shape[1]
        s["s"] = s["s"] + y.sum(1)
        s["ss"] = s["ss"] + y @ y.T

    hooks, shapes = [], {}
    for name, bn in layers.items():
        conv = modules[name]
        hooks.append(
            conv.register_forward_hook(
                lambda m, i, o, n=name: shapes.__setitem__(
                    n, (i[0].shape[-2] * i[0].shape[-1], o.shape[-2] * o.shape[-1])
                )
            )
        )
        if mode == "inputs":
            hooks.append(conv.register_forward_pre_hook(lambda m, i, n=name: accumulate(n, i[0])))
        else:
            hooks.append(modules[bn or name].register_forward_hook(lambda m, i, o, n=name: accumulate(n, o)))
    if torch.is_tensor(data):
        data = torch.utils.data.TensorDataset(data)
    if hasattr(data, "__len__"):  # refuse before the pass when the set is known to be too small
        _check_calibration(min(len(data), max_images or len(data)), layers, modules, mode, max_images)
    seen = 0
    try:
        with torch.inference_mode():
            for batch in progress_bar(
                as_loader(data, batch_size), desc=f"moments ({mode})", enabled=progress, leave=False
            ):
                x = batch[0] if isinstance(batch, (list, tuple)) else batch
                if max_images is not None:
                    x = x[: max_images - seen]
                if len(x) == 0:
                    break
                net(x.to(dev))
                seen += len(x)
    finally:
        for h in hooks:
            h.remove()
    _check_calibration(seen, layers, modules, mode, max_images)
    out = {}
    for name, bn in layers.items():
        conv = modules[name]
        s = sums[name]
        mean = s["s"] / s["n"]
        m2 = s["ss"] / s["n"]
        cov = m2 - torch.outer(mean, mean) if mode == "outputs" else m2
        lam, vec = torch.linalg.eigh(cov)
        order = torch.argsort(lam, descending=True)
        out[name] = LayerSpectrum(
            name,
            bn,
            mode,
            lam[order].numpy(),
            vec[:, order].numpy(),
            mean.numpy(),
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size[0] * conv.kernel_size[1],
            shapes[name][0],
            shapes[name][1],
            int(s["n"]),
        )
    return out


def _check_calibration(n: int, layers, modules, mode: str, max_images) -> None:
    for name in layers:
        conv = modules[name]
        c = conv.in_channels if mode == "inputs" else conv.out_channels
        if n < c:
            raise ValueError(
                f"the calibration set has {n} images, fewer than layer {name!r}'s {c} channels: its "
                f"{'second moment' if mode == 'inputs' else 'covariance'} would rest on too few independent samples; "
                f"give at least {c} images (max_images={max_images})"
            )


# ----------------------------------------------------------------------------- ranks
def ranks_for_energy(spectra: dict[str, LayerSpectrum], threshold: float) -> dict[str, int]:
    """Per layer, the fewest directions that keep ``threshold`` of its energy."""
    if not 0 < threshold <= 1:
        raise ValueError(f"energy threshold must be in (0, 1], got {threshold}")
    return {n: s.rank_for(threshold) for n, s in spectra.items()}


def ranks_for_flops(spectra: dict[str, LayerSpectrum], budget: float) -> dict[str, int]:
    """Ranks whose low-rank pairs cost at most ``budget`` FLOPs per image in all (the prunable
    layers' share of the model's target). Directions are taken across layers in order of explained
    energy fraction per FLOP (within a layer that order follows the eigenvalues), while they fit. A
    layer that reaches its break-even rank is kept whole (rank = its channels) at its own cost, and
    what that frees is spent again on the others."""
    whole: set = set()
    while True:
        active = {n: s for n, s in spectra.items() if n not in whole}
        ranks = _greedy_ranks(active, budget - sum(spectra[n].flops() for n in whole)) if active else {}
        newly = {n for n, r in ranks.items() if r >= spectra[n].break_even()}
        if not newly:
            return {**ranks, **{n: spectra[n].channels for n in whole}}
        whole |= newly


def _greedy_ranks(spectra: dict[str, LayerSpectrum], budget: float) -> dict[str, int]:
    need = sum(s.flops(1) for s in spectra.values())
    if budget < need:
        raise ValueError(
            f"a FLOPs budget of {budget:,.0f} per image for the prunable layers is below "
            f"what one direction per layer costs ({need:,.0f}): ask for a smaller speed-up"
        )
    ranks = {n: 1 for n in spectra}
    used = need
    cand = []
    for n, s in spectra.items():
        lam = np.clip(s.eigvals, 0, None) / max(np.clip(s.eigvals, 0, None).sum(), 1e-300)
        per_rank = s.flops(2) - s.flops(1)
        cand += [(lam[i] / per_rank, n, per_rank) for i in range(1, s.channels)]
    for _, n, cost in sorted(cand, key=lambda c: -c[0]):
        if used + cost <= budget:
            ranks[n] += 1
            used += cost
    return ranks


# ----------------------------------------------------------------------------- re-expression
def lowrank_weights(
    spec: LayerSpectrum, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, r: int
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """[(weight, bias)] of the pair's two convolutions at rank r (float64): outputs with the
    BatchNorm folded in, inputs without (the BatchNorm stays as it was)."""
    w, b = folded_weights(conv, bn if spec.mode == "outputs" else None)
    vec = torch.from_numpy(spec.eigvecs[:, :r])
    if spec.mode == "outputs":
        mean = torch.from_numpy(spec.mean)
        w1 = torch.einsum("or,oikl->rikl", vec, w)
        return [(w1, vec.T @ b), (vec[:, :, None, None], mean - vec @ (vec.T @ mean))]
    return [(vec.T[:, :, None, None].contiguous(), None), (torch.einsum("oikl,ir->orkl", w, vec), b)]


@dataclass
class PruneResult:
    model: nn.Module
    method: str
    ranks: dict = field(default_factory=dict)  # decorrelated: layer → kept directions (None: kept whole)
    spectra: dict = field(default_factory=dict)
    seconds: float = 0.0
    channel_ratio: float | None = None  # structured baselines: the ratio the FLOPs bisection found


def decorrelate(
    model: nn.Module, spectra: dict[str, LayerSpectrum], ranks: dict[str, int], *, only_if_cheaper: bool = True
) -> nn.Module:
    """A copy of ``model`` with each layer re-expressed at its rank (with ``only_if_cheaper``, a
    layer at or above its break-even rank is left whole). The copy carries ``build_args`` of
    ``build_model("pruned", ...)``."""
    base_args = getattr(unwrap(model), "build_args", None)
    net = copy.deepcopy(unwrap(model)).cpu().eval()
    spec_out = {}
    for name, r in ranks.items():
        s = spectra[name]
        if not 1 <= r <= s.channels:
            raise ValueError(f"rank {r} for layer {name!r} outside 1..{s.channels}")
        if only_if_cheaper and r >= s.break_even():
            continue
        conv, bn = get_module(net, name), get_module(net, s.bn) if s.bn else None
        spec_out[name] = [s.mode, int(r), s.bn]
        apply_lowrank(net, {name: spec_out[name]})
        pair = get_module(net, name)
        with torch.no_grad():
            for mod, (w, b) in zip(pair, lowrank_weights(s, conv, bn, r)):
                mod.weight.copy_(w.to(mod.weight.dtype))
                if b is not None:
                    mod.bias.copy_(b.to(mod.bias.dtype))
            if bn is not None and s.mode == "outputs":  # re-normalising: the identity in eval mode
                vec, lam = torch.from_numpy(s.eigvecs[:, :r]), torch.from_numpy(np.clip(s.eigvals[:r], 0, None))
                var = (vec**2 * lam).sum(1)
                mean = torch.from_numpy(s.mean)
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)
                bn.weight.copy_((var + bn.eps).sqrt())
                bn.bias.copy_(mean)
    if base_args is not None:
        net.build_args = {
            "name": "pruned",
            "num_classes": base_args.get("num_classes", 10),
            "base": base_args,
            "lowrank": spec_out,
        }
    return net


def prune_decorrelated(
    model: nn.Module,
    data,
    *,
    mode: str = "outputs",
    speedup: float | None = None,
    budget: float | None = None,
    energy: float | None = None,
    target_flops: int | None = None,
    target_all_ops: int | None = None,
    layers=None,
    input_size=(3, 32, 32),
    max_images: int | None = 512,
    device="auto",
    progress: bool = True,
) -> PruneResult:
    """Prune ``model`` in its decorrelated space: ``speedup`` (whole-model FLOPs ÷ this), ``budget``
    (the fraction of the model's FLOPs to keep, in (0, 1): ``1 / speedup``), ``target_flops`` (FLOPs
    per image of the pruned model, e.g. a baseline's measured count) or an ``energy`` threshold per
    layer, one of the four. A speed-up holds by both FLOP counts (``costs``: flop_counter's matrix
    work and the all-ops count, whose normalisation and activations the pairs keep at full width);
    ``target_all_ops`` adds the all-ops bound to a ``target_flops``. The model is left as it came."""
    if sum(v is not None for v in (speedup, budget, energy, target_flops)) != 1:
        raise ValueError(
            "give one of speedup= (a FLOPs reduction for the whole model, > 1), budget= (the fraction of FLOPs "
            "to keep, in (0, 1)), target_flops= (FLOPs per image) or energy= (a per-layer threshold in (0, 1])"
        )
    if budget is not None:
        if not (isinstance(budget, (int, float)) and 0 < budget < 1):
            raise ValueError(
                "budget must be the fraction of the model's FLOPs to "
                f"keep, in (0, 1) (0.33 for a 3x speed-up), got {budget!r}"
            )
        speedup = 1.0 / budget
    if speedup is not None:
        check_speedup(speedup)
    t = time.perf_counter()
    pairs = prunable_layers(unwrap(model), layers)
    spectra = layer_spectra(model, data, pairs, mode, max_images=max_images, device=device, progress=progress)
    if energy is not None:
        ranks = ranks_for_energy(spectra, energy)
        net = decorrelate(model, spectra, ranks)
    else:
        total, total_all = flop_counts(model, input_size)
        if speedup is not None:
            target_flops, target_all_ops = total / speedup, total_all / speedup
        net, ranks = _within_both(model, spectra, total, target_flops, target_all_ops, input_size)
    return PruneResult(
        net,
        f"decorrelated-{mode}",
        {n: (r if r < spectra[n].break_even() else None) for n, r in ranks.items()},
        spectra,
        time.perf_counter() - t,
    )


def _within_both(model, spectra, total: int, target: float, target_all: float | None, input_size, steps: int = 16):
    """The decorrelated model whose ranks (allocated by ``ranks_for_flops``) fit ``target``
    flop_counter FLOPs and, when given, ``target_all`` all-ops FLOPs: the rank budget that fits
    the first count, else the largest that fits both, found by bisection (ranks move in whole
    directions, so a budget cut by the overshoot alone may change nothing)."""
    fixed = total - sum(s.flops() for s in spectra.values())

    def attempt(budget):
        ranks = ranks_for_flops(spectra, budget)
        net = decorrelate(model, spectra, ranks)
        flops, all_ops = flop_counts(net, input_size)
        fits = flops <= target and (target_all is None or all_ops <= target_all)
        return fits, net, ranks, (flops, all_ops)

    hi = target - fixed
    fits, net, ranks, got = attempt(hi)
    if fits:
        return net, ranks
    lo, best = 0.0, None
    for _ in range(steps):
        mid = (lo + hi) / 2
        fits, net, ranks, got = attempt(mid)
        if fits:
            lo, best = mid, (net, ranks)
        else:
            hi = mid
    if best is None:
        fits, net, ranks, got = attempt(0.0)
        if not fits:
            raise ValueError(
                f"no ranks reach {target:.3g} FLOPs (flop_counter) and {target_all or float('nan'):.3g} (all ops): "
                f"the smallest ranks give {got[0]:.3g} and {got[1]:.3g}; ask for a smaller speed-up"
            )
        best = (net, ranks)
    return best


def check_speedup(speedup: float) -> None:
    if not (isinstance(speedup, (int, float)) and np.isfinite(speedup) and speedup > 1):
        raise ValueError(
            "speedup must be a number > 1 (the whole model's FLOPs divided by "
            f"it; a budget fraction b in (0, 1) is speedup=1/b), got {speedup!r}"
        )


# ----------------------------------------------------------------------------- baselines
def prune_structured(
    model: nn.Module, importance: str, speedup: float, *, input_size=(3, 32, 32), tol: float = 0.01
) -> PruneResult:
    """Torch-Pruning's structured channel pruning (``importance``: ``"l1"`` filter norm or
    ``"fpgm"``), one channel ratio for every layer (the classifier kept whole), found by bisection
    so that the measured FLOPs come within ``tol`` of the target (or just under it) by the stricter
    of the two counts (flop_counter's and all ops'). Prunes a copy: ``model`` stays as it was."""
    import torch_pruning as tp

    check_speedup(speedup)
    imp = {"l1": lambda: tp.importance.MagnitudeImportance(p=1), "fpgm": lambda: tp.importance.FPGMImportance()}
    if importance not in imp:
        raise ValueError(f"unknown importance {importance!r}; allowed: {BASELINES}")
    t = time.perf_counter()
    base = copy.deepcopy(unwrap(model)).cpu().eval()  # the caller's model stays where and as it was
    total = flop_counts(base, input_size)
    example = torch.zeros(1, *input_size)

    def pruned(ratio):
        net = copy.deepcopy(base)
        ignored = [m for m in net.modules() if isinstance(m, nn.Linear)][-1:]  # the classifier stays whole
        tp.pruner.MetaPruner(
            net, example, importance=imp[importance](), pruning_ratio=ratio, ignored_layers=ignored
        ).step()
        # the stricter of the two counts: the kept share of flop_counter's FLOPs or of all ops
        return net, max(f / f0 for f, f0 in zip(flop_counts(net, input_size), total))

    lo, hi, best = 0.0, 0.95, None
    for _ in range(20):
        mid = (lo + hi) / 2
        net, kept = pruned(mid)
        if kept <= 1 / speedup:
            best, hi = (net, kept, mid), mid
            if kept >= (1 - tol) / speedup:
                break
        else:
            lo = mid
    if best is None:
        raise ValueError(f"Torch-Pruning could not reach {speedup}× fewer FLOPs with one channel ratio below 0.95")
    net = best[0]
    args = getattr(base, "build_args", None)
    if args is not None:
        before = channel_shapes(base)
        net.build_args = {
            "name": "pruned",
            "num_classes": args.get("num_classes", 10),
            "base": args,
            "shapes": {k: v for k, v in channel_shapes(net).items() if before.get(k) != v},
        }
    return PruneResult(net, importance, seconds=time.perf_counter() - t, channel_ratio=best[2])


def channel_correlation(spec: LayerSpectrum, *, basis: str = "original") -> np.ndarray:
    """The layer's channel correlation matrix in its original basis, or in the decorrelated one
    (``basis="decorrelated"``: diagonal up to rounding for ``outputs``; for ``inputs`` the basis
    diagonalises the uncentred second moment, so the centred correlation keeps the mean's share)."""
    lam, vec, mean = spec.eigvals, spec.eigvecs, spec.mean
    m = (vec * lam) @ vec.T  # the matrix whose eigen-decomposition this is
    if spec.mode == "inputs":  # a second moment: centred, a covariance (not diagonal in the V basis)
        m = m - np.outer(mean, mean)
    if basis == "decorrelated":
        m = vec.T @ m @ vec
    elif basis != "original":
        raise ValueError(f"basis must be 'original' or 'decorrelated', got {basis!r}")
    d = np.sqrt(np.clip(np.diag(m), 1e-30, None))
    return m / d[:, None] / d[None, :]


__all__ = [
    "MODES",
    "BASELINES",
    "LayerSpectrum",
    "PruneResult",
    "prunable_layers",
    "folded_weights",
    "layer_spectra",
    "ranks_for_energy",
    "ranks_for_flops",
    "lowrank_weights",
    "decorrelate",
    "prune_decorrelated",
    "prune_structured",
    "measure_flops",
    "measure_latency",
    "model_costs",
    "channel_correlation",
    "check_speedup",
]


# ---------------------------------------------------------------------------------------------- registry
class PruningMethod:
    """A way to prune a trained network to a FLOPs target (Torch-Pruning's style: one small class per
    criterion, registered by name in ``PRUNING_METHODS``). ``baseline``: a structured baseline,
    pruned first at each speed-up; the others are then given the baselines' measured FLOPs by both
    counts (``target_flops``, ``target_all_ops``) so every method is compared at equal cost.
    ``mode``: the decorrelated space whose spectra a method keeps (None for the baselines)."""

    name: str = ""
    baseline: bool = False
    mode: str | None = None

    def prune(
        self,
        model: nn.Module,
        speedup: float,
        *,
        calibration,
        input_size,
        device,
        max_images: int,
        target_flops: int | None = None,
        target_all_ops: int | None = None,
    ) -> PruneResult:
        raise NotImplementedError


class DecorrelatedPruning(PruningMethod):
    """Paper 6: prune in the orthogonal (PCA) space of a layer's outputs or inputs (``prune_decorrelated``)."""

    def __init__(self, mode: str):
        self.mode, self.name = mode, f"decorrelated-{mode}"

    def prune(
        self, model, speedup, *, calibration, input_size, device, max_images, target_flops=None, target_all_ops=None
    ):
        target = (
            dict(target_flops=target_flops, target_all_ops=target_all_ops)
            if target_flops is not None
            else dict(speedup=speedup)
        )
        return prune_decorrelated(
            model,
            calibration,
            mode=self.mode,
            input_size=input_size,
            device=device,
            max_images=max_images,
            progress=False,
            **target,
        )


class StructuredPruning(PruningMethod):
    """Torch-Pruning's structured channel pruning by a filter importance (``prune_structured``)."""

    baseline = True

    def __init__(self, importance: str):
        self.name = importance

    def prune(
        self, model, speedup, *, calibration, input_size, device, max_images, target_flops=None, target_all_ops=None
    ):
        return prune_structured(model, self.name, speedup, input_size=input_size)


PRUNING_METHODS: dict[str, PruningMethod] = {
    m.name: m for m in [*(DecorrelatedPruning(mode) for mode in MODES), *(StructuredPruning(b) for b in BASELINES)]
}


def get_pruning_method(name: str) -> PruningMethod:
    """The registered method ``name`` (an unknown name lists the close matches)."""
    if name not in PRUNING_METHODS:
        from .._utils import unknown_name_message

        raise ValueError(unknown_name_message("pruning method", name, list(PRUNING_METHODS)))
    return PRUNING_METHODS[name]
