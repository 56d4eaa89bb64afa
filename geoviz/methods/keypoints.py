"""Sparse keypoint representation from a CNN autoencoder (Tarasiuk, Tomczyk & Stasiak, Appl. Sci.
10(15):5186, 2020): the code of the autoencoder is K feature maps the size of the image, made so
sparse that each non-zero is a *keypoint* — a feature type, exact coordinates and an intensity.

Architecture (as in the paper): no pooling, size-preserving padding, PReLU and dropout, one shared
decoder, squared reconstruction error. Set-ups: ``MF4`` — four fixed, hand-made line-segment
filters in four directions (only the decoder learns); ``AF4`` / ``AF5`` — four or five learned
features.

How the sparsity is enforced is open in the paper; ours (every part a parameter):
1. non-negative feature maps (ReLU);
2. local-maximum suppression: a value survives only if it is the maximum of its ``window``×``window``
   neighbourhood in its own map and exceeds ``threshold``;
3. a per-image budget: the ``max_keypoints`` strongest survivors over all maps;
4. gradients to the kept keypoints only (``ste=False``, the default), or a straight-through
   gradient (``ste=True``: the forward pass is sparse, the backward pass that of the dense maps);
   measured on digits, the straight-through AF4 stayed at the mean-image floor;
5. optionally an L1 penalty on the code (the engine's ``code_l1`` term).

The decoder (``decoder="blocks"``, the default) is the paper's: each keypoint type draws one
learned block (a transposed convolution with one ``decoder_kernel``² kernel per type), scaled by
the keypoint's intensity, and blocks add; then a bias and an optional output non-linearity
(``output="linear"`` by default; ``"sigmoid"`` squashes the sum, so superposition then holds before
it). ``decoder="nonlinear"`` is our earlier three-layer decoder, kept as an option: there a
block's shape changes with its intensity and overlapping keypoints do not add. The decoder's
response to one keypoint alone at the centre is that feature's visual building block
(``building_block``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._utils import eval_mode

SETUPS = {
    "MF4": {"num_types": 4, "learned": False},
    "AF4": {"num_types": 4, "learned": True},
    "AF5": {"num_types": 5, "learned": True},
}
TABLE_COLUMNS = ("image", "type", "y", "x", "intensity")


def line_filters(size: int = 7, sigma: float = 0.8) -> torch.Tensor:
    """Four line-segment detectors (0°, 45°, 90°, 135°): a Gaussian ridge of width ``sigma`` along
    a centred segment, zero-mean and unit-norm. Shape (4, 1, size, size)."""
    c = (size - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(size) - c, torch.arange(size) - c, indexing="ij")
    out = []
    for deg in (0, 45, 90, 135):
        t = math.radians(deg)
        across = -xx * math.sin(t) + yy * math.cos(t)  # distance from the line through the centre
        along = xx * math.cos(t) + yy * math.sin(t)
        f = torch.exp(-0.5 * (across / sigma) ** 2) * (along.abs() <= c).float()
        f = f - f.mean()
        out.append(f / f.norm())
    return torch.stack(out)[:, None]


@dataclass
class Keypoints:
    """Keypoints of a batch of images: one entry per non-zero of the sparse code.

    ``image``, ``type``, ``y``, ``x`` are int64 tensors, ``intensity`` float32; ``to_maps`` and
    ``from_maps`` convert to and from the dense (B, K, H, W) code exactly, as do ``to_table`` and
    ``from_table`` to and from a list of rows.
    """

    image: torch.Tensor
    type: torch.Tensor
    y: torch.Tensor
    x: torch.Tensor
    intensity: torch.Tensor
    n_images: int
    num_types: int
    size: tuple[int, int]

    @classmethod
    def from_maps(cls, maps: torch.Tensor) -> Keypoints:
        if maps.dim() != 4:
            raise ValueError(f"sparse maps must be (B, K, H, W), got {tuple(maps.shape)}")
        m = maps.detach().float().cpu()
        b, k, y, x = m.nonzero(as_tuple=True)
        return cls(b, k, y, x, m[b, k, y, x], m.shape[0], m.shape[1], (m.shape[2], m.shape[3]))

    def to_maps(self) -> torch.Tensor:
        out = torch.zeros(self.n_images, self.num_types, *self.size)
        out[self.image, self.type, self.y, self.x] = self.intensity
        return out

    def to_table(self) -> list[dict]:
        cols = [t.tolist() for t in (self.image, self.type, self.y, self.x)] + [self.intensity.tolist()]
        return [dict(zip(TABLE_COLUMNS, row)) for row in zip(*cols)]

    @classmethod
    def from_table(cls, rows: list[dict], n_images: int, num_types: int, size: tuple[int, int]) -> Keypoints:
        def col(k, dt):
            return torch.tensor([r[k] for r in rows], dtype=dt)

        return cls(
            col("image", torch.long),
            col("type", torch.long),
            col("y", torch.long),
            col("x", torch.long),
            col("intensity", torch.float32),
            n_images,
            num_types,
            tuple(size),
        )

    def __len__(self) -> int:
        return len(self.image)

    def counts(self) -> torch.Tensor:
        """Keypoints per image."""
        return torch.bincount(self.image, minlength=self.n_images)

    def _subset(self, keep: torch.Tensor, n_images: int | None = None) -> Keypoints:
        return Keypoints(
            self.image[keep],
            self.type[keep],
            self.y[keep],
            self.x[keep],
            self.intensity[keep],
            self.n_images if n_images is None else n_images,
            self.num_types,
            self.size,
        )

    def select(self, *, top: int | None = None, types=None) -> Keypoints:
        """Keep the given feature types and then, per image, the ``top`` strongest keypoints."""
        keep = torch.ones(len(self), dtype=torch.bool)
        if types is not None:
            keep &= torch.isin(self.type, torch.as_tensor(list(types), dtype=torch.long))
        kp = self._subset(keep)
        if top is None:
            return kp
        if top < 0:
            raise ValueError(f"top must be >= 0, got {top}")
        order = torch.argsort(kp.intensity, descending=True, stable=True)
        order = order[torch.argsort(kp.image[order], stable=True)]  # grouped by image, strongest first
        counts = kp.counts()
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty(len(kp), dtype=torch.long)
        rank[order] = torch.arange(len(kp)) - starts[kp.image[order]]  # 0 = the image's strongest
        return kp._subset(rank < top)

    def of_image(self, i: int) -> Keypoints:
        kp = self._subset(self.image == i, n_images=1)
        kp.image = torch.zeros_like(kp.image)
        return kp


class SparseKeypointAE(nn.Module):
    """The keypoint autoencoder. ``forward(x)`` returns the reconstruction and keeps the sparse code
    in ``last_code``; ``encode`` gives ``Keypoints``; ``decode`` maps keypoints (or sparse maps)
    back to images."""

    def __init__(
        self,
        setup: str = "AF4",
        *,
        num_types: int | None = None,
        in_chans: int = 1,
        hidden: int = 48,
        window: int = 5,
        max_keypoints: int = 24,
        threshold: float = 0.0,
        dropout: float = 0.1,
        filter_size: int = 7,
        decoder: str = "blocks",
        decoder_kernel: int | None = None,
        output: str = "linear",
        ste: bool = False,
    ):
        super().__init__()
        if setup not in SETUPS:
            raise ValueError(
                f"unknown set-up {setup!r}; allowed: {tuple(SETUPS)} (MF4: fixed line filters; AF4/AF5: learned)"
            )
        spec = SETUPS[setup]
        k = spec["num_types"] if num_types is None else num_types
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"the number of feature types K must be a whole number >= 1, got {k!r}")
        if not spec["learned"] and k != 4:
            raise ValueError(f"MF4 has exactly 4 fixed line filters; got K={k} (use AF{k} for learned features)")
        if not isinstance(max_keypoints, int) or max_keypoints < 1:
            raise ValueError(
                f"max_keypoints (the sparsity budget per image) must be a whole number >= 1, got {max_keypoints!r}"
            )
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0 (intensities are non-negative), got {threshold}")
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window must be an odd number >= 1, got {window}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if decoder not in ("blocks", "nonlinear"):
            raise ValueError(
                f"unknown decoder {decoder!r}; allowed: 'blocks' (one "
                "learned block per keypoint type, the paper's), 'nonlinear'"
            )
        if output not in ("linear", "sigmoid"):
            raise ValueError(f"unknown output {output!r}; allowed: 'linear', 'sigmoid'")
        decoder_kernel = (11 if decoder == "blocks" else 5) if decoder_kernel is None else decoder_kernel
        if decoder_kernel < 1 or decoder_kernel % 2 == 0:
            raise ValueError(f"decoder_kernel must be an odd number >= 1, got {decoder_kernel}")
        self.setup, self.num_types, self.in_chans = setup, k, in_chans
        self.window, self.max_keypoints, self.threshold, self.ste = window, max_keypoints, threshold, ste
        if spec["learned"]:
            self.encoder = nn.Sequential(
                nn.Conv2d(in_chans, hidden, 3, padding=1),
                nn.PReLU(hidden),
                nn.Dropout2d(dropout),
                nn.Conv2d(hidden, hidden, 3, padding=1),
                nn.PReLU(hidden),
                nn.Dropout2d(dropout),
                nn.Conv2d(hidden, k, 3, padding=1),
            )
        else:
            conv = nn.Conv2d(in_chans, 4, filter_size, padding=filter_size // 2, bias=False)
            with torch.no_grad():
                conv.weight.copy_(line_filters(filter_size).repeat(1, in_chans, 1, 1) / in_chans)
            conv.weight.requires_grad_(False)
            self.encoder = nn.Sequential(conv)
        p = decoder_kernel // 2
        if decoder == "blocks":  # image = bias + Σ_keypoints intensity · block[type] placed at (y, x)
            layers = [nn.ConvTranspose2d(k, in_chans, decoder_kernel, padding=p)]
            layers += [nn.Sigmoid()] if output == "sigmoid" else []
            self.decoder = nn.Sequential(*layers)
        else:
            self.decoder = nn.Sequential(
                nn.Conv2d(k, hidden, decoder_kernel, padding=p),
                nn.PReLU(hidden),
                nn.Dropout2d(dropout),
                nn.Conv2d(hidden, hidden, decoder_kernel, padding=p),
                nn.PReLU(hidden),
                nn.Conv2d(hidden, in_chans, decoder_kernel, padding=p),
                nn.Sigmoid(),
            )
        self.last_code: torch.Tensor | None = None
        self.build_args = {
            "name": "keypoint_ae",
            "setup": setup,
            "num_types": k,
            "in_chans": in_chans,
            "hidden": hidden,
            "window": window,
            "max_keypoints": max_keypoints,
            "threshold": threshold,
            "dropout": dropout,
            "filter_size": filter_size,
            "decoder": decoder,
            "decoder_kernel": decoder_kernel,
            "output": output,
            "ste": ste,
        }
        self.decoder_kind, self.output = decoder, output

    # ---------------------------------------------------------------- pieces
    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected images (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.window:
            raise ValueError(
                f"images must be at least {self.window} px (the suppression "
                f"window) on each side, got {tuple(x.shape[-2:])}"
            )

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The dense, non-negative feature maps before sparsification (B, K, H, W)."""
        self._check(x)
        return F.relu(self.encoder(x))

    def sparsify(self, maps: torch.Tensor) -> torch.Tensor:
        """Local maxima above the threshold, then the per-image budget of the strongest ones."""
        with torch.no_grad():
            pooled = F.max_pool2d(maps, self.window, stride=1, padding=self.window // 2)
            cand = torch.where((maps == pooled) & (maps > self.threshold), maps, torch.zeros_like(maps))
            flat = cand.flatten(1)
            n = min(self.max_keypoints, flat.shape[1])
            val, idx = flat.topk(n, dim=1)
            mask = torch.zeros_like(flat).scatter_(1, idx, (val > 0).to(flat.dtype)).view_as(maps)
        sparse = maps * mask
        if self.ste and self.training:  # forward: sparse; backward: as if dense
            return maps + (sparse - maps).detach()
        return sparse

    def code(self, x: torch.Tensor) -> torch.Tensor:
        return self.sparsify(self.feature_maps(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = self.code(x)
        self.last_code = code
        return self.decoder(code)

    # ---------------------------------------------------------------- keypoints
    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 256) -> Keypoints:
        dev = next(self.parameters()).device
        with eval_mode(self):
            maps = torch.cat(
                [self.code(images[i : i + batch_size].to(dev)).cpu() for i in range(0, len(images), batch_size)]
            )
        return Keypoints.from_maps(maps)

    @torch.no_grad()
    def decode(self, keypoints: Keypoints | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        maps = keypoints.to_maps() if isinstance(keypoints, Keypoints) else keypoints
        if maps.dim() != 4 or maps.shape[1] != self.num_types:
            raise ValueError(f"expected sparse maps (B, {self.num_types}, H, W), got {tuple(maps.shape)}")
        dev = next(self.parameters()).device
        with eval_mode(self):
            return torch.cat(
                [self.decoder(maps[i : i + batch_size].to(dev)).cpu() for i in range(0, len(maps), batch_size)]
            )

    def building_block(self, type: int, intensity: float = 1.0, size: tuple[int, int] = (28, 28)) -> torch.Tensor:
        """What one keypoint of ``type`` at the centre adds to the decoder's empty-canvas output
        (C, H, W): for the block decoder, ``intensity`` × that type's kernel."""
        if not 0 <= type < self.num_types:
            raise ValueError(f"type must be in [0, {self.num_types}), got {type}")
        maps = torch.zeros(2, self.num_types, *size)
        maps[0, type, size[0] // 2, size[1] // 2] = intensity
        out = self.decode(maps)
        # the block alone: what the keypoint adds to the empty canvas (the decoder's bias removed)
        return out[0] - out[1]


# -------------------------------------------------------------------- rate
def bits_per_nonzero(height: int, width: int, n_types: int, value_bits: int = 8, signed: bool = False) -> int:
    """Bits to store one non-zero of a sparse code: its position, its type (keypoint type or atom
    index) and its value quantised to ``value_bits`` (+1 sign bit for signed coefficients)."""
    return math.ceil(math.log2(height * width)) + math.ceil(math.log2(max(n_types, 2))) + value_bits + int(signed)


def quantize(code: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Uniform quantisation of a sparse code's values to ``bits`` (magnitudes; sign kept), with
    one scale per image (its largest magnitude, 32 bits a image: negligible)."""
    scale = code.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *([1] * (code.dim() - 1)))
    levels = 2**bits - 1
    return torch.sign(code) * (code.abs() / scale * levels).round() / levels * scale


# -------------------------------------------------------------------- features for classifiers
def keypoint_histogram(kp: Keypoints, grid: int = 4) -> np.ndarray:
    """Intensity-weighted counts of each feature type in a grid×grid partition of the image:
    (n_images, K·grid²). The simple baseline classifier's input."""
    h, w = kp.size
    cell = (kp.y * grid // h) * grid + (kp.x * grid // w)
    col = kp.type * grid * grid + cell
    out = torch.zeros(kp.n_images, kp.num_types * grid * grid)
    out.index_put_((kp.image, col), kp.intensity, accumulate=True)
    return out.numpy()


# -------------------------------------------------------------------- the sparse-coding baseline
class ConvSparseCoder:
    """Convolutional sparse coding at a fixed number of non-zeros per image.

    image ≈ Σ_m z_m ⊛ d_m with unit-norm atoms d_m (``atom_size``²) and codes z with exactly
    ``n_nonzero`` non-zeros per image. ``method="omp"`` (default): batched convolutional orthogonal
    matching pursuit — each step adds the (atom, position) most correlated with the residual and
    refits all chosen coefficients by least squares. ``method="iht"``: iterative hard thresholding
    (projected gradient, step 1/L by power iteration); much weaker at this sparsity (on digits,
    MSE 0.116 after 100 iterations vs 0.199 for an all-zero image), kept for comparison.
    Atoms are learned by alternating coding and a gradient step on the reconstruction error,
    starting from random image patches. Coefficients may be negative (standard sparse coding).
    """

    def __init__(
        self,
        n_atoms: int = 8,
        atom_size: int = 7,
        n_nonzero: int = 24,
        iters: int = 30,
        seed: int = 0,
        method: str = "omp",
    ):
        if n_nonzero < 1:
            raise ValueError(f"n_nonzero must be >= 1, got {n_nonzero}")
        if atom_size % 2 == 0:
            raise ValueError(f"atom_size must be odd, got {atom_size}")
        if method not in ("omp", "iht"):
            raise ValueError(f"unknown sparse coding method {method!r}; allowed: 'omp', 'iht' (FISTA: code_l1)")
        self.n_atoms, self.atom_size, self.n_nonzero, self.iters, self.seed = n_atoms, atom_size, n_nonzero, iters, seed
        self.method = method
        self.atoms: torch.Tensor | None = None

    def _lipschitz(self, shape) -> float:
        g = torch.Generator().manual_seed(self.seed)
        z = torch.randn(1, self.n_atoms, *shape, generator=g)
        for _ in range(20):
            z = self._adjoint(self.reconstruct(z))
            z = z / z.norm()
        return 1.1 * float(
            self._adjoint(self.reconstruct(z)).norm()
        )  # power iteration underestimates L: keep the step below 1/L

    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(z, self.atoms, padding=self.atom_size // 2)

    def _adjoint(self, r: torch.Tensor) -> torch.Tensor:
        return F.conv2d(r, self.atoms, padding=self.atom_size // 2)

    def code(self, x: torch.Tensor, n_nonzero: int | None = None) -> torch.Tensor:
        if self.atoms is None:
            raise ValueError("the dictionary is not learned yet: call fit(images) first")
        n = n_nonzero or self.n_nonzero
        return self._omp(x, n) if self.method == "omp" else self._iht(x, n)

    def _omp(self, x: torch.Tensor, n: int) -> torch.Tensor:
        b, _, h, w = x.shape
        m, p = self.n_atoms, self.atom_size // 2
        target = x.reshape(b, h * w, 1).double()
        cols = torch.zeros(b, h * w, 0, dtype=torch.float64)
        chosen = torch.zeros(b, 0, dtype=torch.long)
        resid = x
        rows = torch.arange(b)
        for _ in range(min(n, m * h * w)):
            corr = F.conv2d(resid, self.atoms, padding=p).flatten(1).abs()
            if chosen.shape[1]:
                corr[rows[:, None], chosen] = -1.0  # never the same (atom, position) twice
            pick = corr.argmax(1)
            chosen = torch.cat([chosen, pick[:, None]], 1)
            one = torch.zeros(b, m * h * w)
            one[rows, pick] = 1.0
            col = F.conv_transpose2d(one.view(b, m, h, w), self.atoms, padding=p).reshape(b, h * w, 1).double()
            cols = torch.cat([cols, col], 2)
            coef = torch.linalg.lstsq(cols, target).solution  # (b, t, 1)
            resid = (target - cols @ coef).float().view(b, 1, h, w)
        z = torch.zeros(b, m * h * w)
        z[rows[:, None], chosen] = coef[..., 0].float()
        return z.view(b, m, h, w)

    def _iht(self, x: torch.Tensor, n: int) -> torch.Tensor:
        step = 1.0 / self._lipschitz(x.shape[-2:])
        z = torch.zeros(x.shape[0], self.n_atoms, *x.shape[-2:])
        for _ in range(self.iters):
            z = z - step * self._adjoint(self.reconstruct(z) - x)
            flat = z.flatten(1)
            idx = flat.abs().topk(min(n, flat.shape[1]), dim=1).indices
            z = torch.zeros_like(flat).scatter_(1, idx, flat.gather(1, idx)).view_as(z)
        return z

    def code_l1(self, x: torch.Tensor, lam: float, iters: int = 100) -> torch.Tensor:
        """Convolutional basis pursuit denoising by FISTA (Beck & Teboulle 2009):
        min_z ½‖x − Σ_m d_m ⊛ z_m‖² + lam·‖z‖₁, step 1/L. The number of non-zeros follows from
        ``lam`` (not fixed): compare with OMP at the non-zeros it gives."""
        if self.atoms is None:
            raise ValueError("the dictionary is not learned yet: call fit(images) first")
        step = 1.0 / self._lipschitz(x.shape[-2:])
        lam = torch.as_tensor(lam, dtype=torch.float32).reshape(-1, 1, 1, 1)  # one penalty, or one per image
        z = y = torch.zeros(x.shape[0], self.n_atoms, *x.shape[-2:])
        t = 1.0
        for _ in range(iters):
            g = y - step * self._adjoint(self.reconstruct(y) - x)
            z_new = torch.sign(g) * (g.abs() - step * lam).clamp_min(0.0)
            t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
            y = z_new + ((t - 1) / t_new) * (z_new - z)
            z, t = z_new, t_new
        return z

    def refit(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Least-squares coefficients on the support of ``z`` (debiasing: L1 shrinks every kept
        coefficient towards 0, which at a few non-zeros costs more than the support is worth)."""
        if len(z) > 32:  # bounded memory: the columns are (images × non-zeros × pixels)
            return torch.cat([self.refit(x[i : i + 32], z[i : i + 32]) for i in range(0, len(z), 32)])
        b, m, h, w = z.shape
        flat = z.flatten(1)
        k = int((flat != 0).sum(1).max()) if len(flat) else 0
        if k == 0:
            return z.clone()
        val, idx = flat.abs().topk(k, dim=1)
        live = val > 0
        one = torch.zeros(b * k, m * h * w)
        one[torch.arange(b * k), idx.reshape(-1)] = live.reshape(-1).float()
        cols = (
            self.reconstruct(one.view(b * k, m, h, w)).view(b, k, h * w).transpose(1, 2).double()
        )  # (b, hw, k); dead columns are 0
        coef = torch.linalg.lstsq(cols, x.reshape(b, h * w, 1).double(), driver="gelsd").solution[..., 0].float()
        out = torch.zeros_like(flat)
        out[torch.arange(b)[:, None], idx] = coef * live
        return out.view_as(z)

    def penalty_for(
        self, x: torch.Tensor, nonzeros: int, iters: int = 150, steps: int = 10, tol: float = 1e-6
    ) -> torch.Tensor:
        """One L1 penalty per image: the smallest (on a log grid, by bisection) at which FISTA's code
        of that image has at most ``nonzeros`` entries above ``tol`` — the per-image budget OMP gets.
        (One penalty for all images left half of them with an empty code at a mean of 4.)"""
        top = self._adjoint(x).flatten(1).abs().amax(1).clamp_min(1e-12)
        lo, hi = torch.log(1e-4 * top), torch.log(top)
        for _ in range(steps):
            mid = (lo + hi) / 2
            nz = (self.code_l1(x, mid.exp(), iters).abs() > tol).flatten(1).sum(1)
            lo, hi = torch.where(nz > nonzeros, mid, lo), torch.where(nz > nonzeros, hi, mid)
        return hi.exp()

    def fit(self, images: torch.Tensor, epochs: int = 3, batch_size: int = 128, lr: float = 0.01) -> ConvSparseCoder:
        g = torch.Generator().manual_seed(self.seed)
        s = self.atom_size
        n = len(images)
        # initial atoms: random patches of the images, unit norm
        pick = torch.randint(0, n, (self.n_atoms,), generator=g)
        ys = torch.randint(0, images.shape[-2] - s + 1, (self.n_atoms,), generator=g)
        xs = torch.randint(0, images.shape[-1] - s + 1, (self.n_atoms,), generator=g)
        atoms = torch.stack(
            [images[i, :1, y : y + s, x : x + s] for i, y, x in zip(pick, ys, xs)]
        ) + 1e-3 * torch.randn(self.n_atoms, 1, s, s, generator=g)
        self.atoms = atoms / atoms.flatten(1).norm(dim=1)[:, None, None, None]
        atoms = self.atoms.clone().requires_grad_(True)
        opt = torch.optim.Adam([atoms], lr=lr)
        for _ in range(epochs):
            for i in torch.randperm(n, generator=g).split(batch_size):
                x = images[i, :1]
                with torch.no_grad():
                    self.atoms = atoms.detach() / atoms.detach().flatten(1).norm(dim=1)[:, None, None, None]
                    z = self.code(x)
                unit = atoms / atoms.flatten(1).norm(dim=1)[:, None, None, None]
                loss = F.mse_loss(F.conv_transpose2d(z, unit, padding=s // 2), x)
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.atoms = (atoms / atoms.flatten(1).norm(dim=1)[:, None, None, None]).detach()
        return self
