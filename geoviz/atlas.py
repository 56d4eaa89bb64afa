"""Model-vs-model geometry: every layer of one network against every layer of another.

``compare(model_a, model_b, data)`` runs both networks over the same images once and measures:

- **minibatch linear CKA** (Nguyen, Raghu & Kornblith 2021; ``geometry.MinibatchCKA``) of every
  pair of layers, each layer's whole map flattened per image, so memory does not grow with the
  number of images;
- for each layer of A, the **best-matching layer of B** (highest CKA);
- **kNN agreement of local features** at chosen pairs of layers (by default each layer of A with
  its best match): both maps area-pooled onto the coarser grid, the same positions of the same
  images seen in both spaces, the Jaccard overlap of their k-neighbour sets
  (``geometry.knn_agreement``), next to the overlap of random neighbour sets (``random_jaccard``:
  a reference only; the floor with an untrained network is the baseline);
- a 2-D picture (UMAP or PCA) of each layer's local features at a shared sample of positions, for
  the report's clickable cells.

The same network at two checkpoints or two seeds is the special case ``compare(net_1, net_2, ...)``.
The HTML report is written by ``geoviz.viz.write_atlas_report`` (plotting lives above this module).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ._io import atomic_write_text
from ._utils import check_number, choice, eval_mode, progress_bar, resolve_device
from .capture import ActivationRecorder, align_maps, as_maps, prefix_tokens_of, resolve_layers
from .geometry import MinibatchCKA, knn_agreement
from .inference import as_loader
from .models import block_layers
from .projection import METHODS as PROJECTIONS
from .projection import as_embedding, project

__all__ = ["Atlas", "block_layers", "compare", "random_jaccard", "weights_digest"]


def _layers(model: nn.Module, layers, which: str) -> list[str]:
    if layers == "auto":
        found = block_layers(model)
        if not found:
            raise ValueError(
                f"layers_{which}='auto' found no blocks in {type(model).__name__}: name the layers (module paths)"
            )
        return found
    return resolve_layers(model, layers)


FORMAT = 2  # of the saved JSON


@dataclass
class Atlas:
    """What ``compare`` measured. ``cka[i, j]`` is layer ``layers_a[i]`` against ``layers_b[j]``;
    ``knn[(la, lb)]`` the kNN agreement at a pair; ``embeddings[("a"|"b", layer)]`` the 2-D points
    of a layer's sampled local features and ``embedding_labels[...]`` the class of each point's image."""

    name_a: str
    name_b: str
    layers_a: list[str]
    layers_b: list[str]
    cka: np.ndarray
    n_images: int
    knn: dict = field(default_factory=dict)
    knn_k: int = 10
    knn_points: dict = field(default_factory=dict)
    embeddings: dict = field(default_factory=dict)
    embedding_labels: dict = field(default_factory=dict)
    classes: list | None = None
    embedding: str | None = None
    seconds: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)  # {"a": digest, "b": digest} of the compared networks' weights
    format: int = FORMAT

    def knn_chance(self, pair) -> float:
        """The kNN agreement of neighbour sets drawn at random: the expected Jaccard overlap of two
        independent uniform k-subsets of the other N − 1 points (their intersection is
        hypergeometric), N the points measured at ``pair``. A reference, not a null: unrelated
        *networks* share far more (their local features all follow the pixels); the floor with an
        untrained network is the baseline to beat."""
        return random_jaccard(self.knn_points[tuple(pair)] - 1, self.knn_k)

    def best_match(self) -> list[tuple[str, str, float]]:
        """For each layer of A: the layer of B with the highest CKA, and that CKA."""
        j = np.nanargmax(self.cka, axis=1)
        return [(la, self.layers_b[jj], float(self.cka[i, jj])) for i, (la, jj) in enumerate(zip(self.layers_a, j))]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cka"] = self.cka.tolist()
        d["knn"] = [[a, b, v] for (a, b), v in self.knn.items()]
        d["knn_points"] = [[a, b, v] for (a, b), v in self.knn_points.items()]
        d["embeddings"] = [
            [s, l, np.round(v, 4).tolist(), getattr(v, "graph", "")] for (s, l), v in self.embeddings.items()
        ]
        d["embedding_labels"] = [[s, l, v.tolist()] for (s, l), v in self.embedding_labels.items()]
        d["best_match"] = self.best_match()
        d["knn_chance"] = [[a, b, self.knn_chance((a, b))] for a, b in self.knn]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Atlas:
        d = {k: v for k, v in d.items() if k not in ("best_match", "knn_chance")}
        d["cka"] = np.asarray(d["cka"], dtype=np.float64)
        d["knn"] = {(a, b): v for a, b, v in d["knn"]}
        d["knn_points"] = {(a, b): v for a, b, v in d["knn_points"]}
        d["embeddings"] = {(s, l): as_embedding(v, *graph) for s, l, v, *graph in d["embeddings"]}
        d["embedding_labels"] = {(s, l): np.asarray(v, dtype=np.int64) for s, l, v in d["embedding_labels"]}
        return cls(**d)

    def save(self, path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path) -> Atlas:
        with open(path) as f:
            d = json.load(f)
        if d.get("format") != FORMAT:
            raise ValueError(
                f"{path} holds an atlas of format {d.get('format', 1)}, "
                f"this geoviz reads format {FORMAT}: compute it again"
            )
        return cls.from_dict(d)


def weights_digest(model: nn.Module) -> str:
    """A digest of a network's parameters and buffers: which weights an atlas was measured on."""
    import hashlib

    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _model_name(model: nn.Module) -> str:
    return getattr(model, "build_args", {}).get("name", type(model).__name__)


def random_jaccard(m: int, k: int) -> float:
    """E[|A ∩ B| / |A ∪ B|] for independent uniform k-subsets A, B of m items (exact)."""
    from scipy.stats import hypergeom

    if m < k:
        raise ValueError(f"need at least k={k} candidate neighbours, got {m}")
    i = np.arange(0, k + 1)
    return float((hypergeom.pmf(i, m, k, k) * i / (2 * k - i)).sum())


def _pick(acts: dict, name: str) -> torch.Tensor:
    if name in acts:
        return acts[name]
    calls = sorted(k for k in acts if k.startswith(name + "#"))
    if not calls:
        raise ValueError(
            f"layer {name!r} did not run in the forward pass (an auxiliary head used in training only?): leave it out"
        )
    raise ValueError(
        f"layer {name!r} runs {len(calls)} times in one forward pass (a module used more than once): compare its "
        f"parent block instead, or one call by name ({', '.join(map(repr, calls[:3]))})"
    )


def _sampled(maps: torch.Tensor, p: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``p`` random positions of each image of (B, C, H, W) (all when p ≥ H·W): their features
    (B·p', C) on the CPU in float32, and each row's image (B·p',)."""
    b, c, h, w = maps.shape
    p = min(p, h * w)
    pos = torch.rand(b, h * w, generator=g).argsort(1)[:, :p].to(maps.device)
    flat = maps.flatten(2).transpose(1, 2)  # (B, HW, C)
    rows = torch.gather(flat, 1, pos[..., None].expand(b, p, c)).reshape(b * p, c)
    return rows.float().cpu(), torch.arange(b).repeat_interleave(p)


def _batches(n: int, size: int) -> list[list[int]]:
    """Index batches of ``size`` whose last one, when it would hold fewer than 4 images (the
    unbiased estimator's minimum), joins the one before."""
    out = [list(range(s, min(n, s + size))) for s in range(0, n, size)]
    if len(out) > 1 and len(out[-1]) < 4:
        last = out.pop()
        out[-1] += last
    return out


def _class_names(data) -> list | None:
    while isinstance(data, Subset):
        data = data.dataset
    classes = getattr(data, "classes", None)
    return list(classes) if classes else None


def compare(
    model_a: nn.Module,
    model_b: nn.Module,
    data,
    layers_a="auto",
    layers_b="auto",
    *,
    n_images: int | None = None,
    batch_size: int = 128,
    device: str | torch.device = "auto",
    pairs="best",
    k: int = 10,
    knn_images: int = 256,
    knn_points: int = 2000,
    embedding: str | None = "umap",
    seed: int = 0,
    progress: bool = True,
) -> Atlas:
    """Every layer of ``model_a`` against every layer of ``model_b`` on the same images of ``data``
    (a Dataset: the first ``n_images`` of it, all by default; or a data set name: ``folder:<path>``
    at network A's input size, or a registered data set's test split, ``n_images`` of it).

    ``layers_a`` / ``layers_b``: ``"auto"`` (the blocks, ``block_layers``) or module paths / globs.
    ``pairs``: ``"best"`` (each layer of A with its best-matching layer of B), a list of
    (layer of A, layer of B), or None: where kNN agreement of local features is measured, on the
    first ``knn_images`` images, both maps area-pooled onto the coarser grid, at up to
    ``knn_points`` positions shared by both (the same number per image), k neighbours.
    ``embedding``: ``"umap"``, ``"pca"`` or None: 2-D pictures of each layer's local features at
    up to ``knn_points`` positions of the same images.

    Two passes: CKA over all images (memory independent of their number), then a short one over
    the first ``knn_images`` images that keeps only the sampled positions, so memory stays bounded
    at any resolution. A last batch of fewer than 4 images joins the one before it.
    """
    check_number("batch_size", batch_size, low=4, integer=True)
    check_number("k", k, low=1, integer=True)
    check_number("knn_images", knn_images, low=k + 2, integer=True)
    check_number("knn_points", knn_points, low=k + 2, integer=True)
    check_number("n_images", n_images, low=4, integer=True, allow_none=True)
    if embedding is not None:
        choice("embedding", embedding, PROJECTIONS)
    if isinstance(data, str):  # a data set name: its test split, or folder:<path> at A's input size
        data = _named_data(data, model_a, n_images, seed)
    if isinstance(data, DataLoader) or not isinstance(data, Dataset):
        raise TypeError(
            f"compare takes a Dataset or a data set name (it batches the images itself), got {type(data).__name__}"
        )
    la, lb = _layers(model_a, layers_a, "a"), _layers(model_b, layers_b, "b")
    n = len(data) if n_images is None else n_images
    if n > len(data):
        raise ValueError(f"n_images={n_images} but the data set holds {len(data)} images")
    if n < 4:
        raise ValueError(f"compare needs at least 4 images (the unbiased HSIC estimator), got {n}")
    m = min(knn_images, n)
    if (pairs is not None or embedding is not None) and m < k + 2:
        raise ValueError(
            f"kNN agreement and pictures use the first {m} images, and a 1 × 1 layer gives one point per image: "
            f"k={k} needs at least {k + 2}; lower k or use more images"
        )
    if pairs not in ("best", None):
        pairs = [tuple(p) for p in pairs]
        for a, b in pairs:
            if a not in la or b not in lb:
                raise ValueError(
                    f"pair ({a!r}, {b!r}) is not among the compared layers: add them to layers_a / layers_b"
                )
    dev = resolve_device(device)
    model_a.to(dev), model_b.to(dev)
    cka, t0 = MinibatchCKA(), time.perf_counter()
    sampler = _batches(n, batch_size)
    with (
        torch.no_grad(),
        eval_mode(model_a, model_b),
        ActivationRecorder(model_a, la, device=None) as ra,
        ActivationRecorder(model_b, lb, device=None) as rb,
    ):
        # a Subset: a data set batched on the device then moves these images only
        for batch in progress_bar(
            as_loader(Subset(data, range(n)), batch_size, device=dev, batch_sampler=sampler),
            desc="atlas: CKA",
            enabled=progress,
            leave=False,
        ):
            x = batch[0].to(dev)
            model_a(x), model_b(x)
            cka.update([_pick(ra.activations, l) for l in la], [_pick(rb.activations, l) for l in lb])
    atlas = Atlas(
        _model_name(model_a),
        _model_name(model_b),
        la,
        lb,
        cka.value().cpu().numpy(),
        n,
        knn_k=k,
        classes=_class_names(data),
        embedding=embedding,
        weights={"a": weights_digest(model_a), "b": weights_digest(model_b)},
    )
    t1 = time.perf_counter()
    chosen = [] if pairs is None else [(a, b) for a, b, _ in atlas.best_match()] if pairs == "best" else pairs
    per_image = -(-knn_points // m)
    need_a = sorted(set(la if embedding else []) | {a for a, _ in chosen}, key=la.index)
    need_b = sorted(set(lb if embedding else []) | {b for _, b in chosen}, key=lb.index)
    pair_rows = {p: ([], []) for p in chosen}
    pic_rows = {(s, l): [] for s, names in (("a", la), ("b", lb)) for l in (names if embedding else [])}
    g = torch.Generator().manual_seed(seed)
    prefix_a, prefix_b = prefix_tokens_of(model_a), prefix_tokens_of(model_b)
    if need_a or need_b:
        with (
            torch.no_grad(),
            eval_mode(model_a, model_b),
            ActivationRecorder(model_a, need_a, device=None) as ra,
            ActivationRecorder(model_b, need_b, device=None) as rb,
        ):
            for batch in as_loader(
                Subset(data, range(m)), batch_size, device=dev, batch_sampler=_batches(m, batch_size)
            ):
                x = batch[0].to(dev)
                model_a(x), model_b(x)
                y = torch.as_tensor(batch[1]).cpu()
                maps_a = lambda l: as_maps(_pick(ra.activations, l), tuple(x.shape[-2:]), prefix_a)  # noqa: E731
                maps_b = lambda l: as_maps(_pick(rb.activations, l), tuple(x.shape[-2:]), prefix_b)  # noqa: E731
                for (a, b), (rows_a, rows_b) in pair_rows.items():
                    fa, fb = align_maps(maps_a(a), maps_b(b), "pool")
                    state = g.get_state()  # the same positions of both maps
                    rows_a.append(_sampled(fa, per_image, g)[0])
                    g.set_state(state)
                    rows_b.append(_sampled(fb, per_image, g)[0])
                for (side, l), rows in pic_rows.items():
                    feats, img = _sampled((maps_a if side == "a" else maps_b)(l), per_image, g)
                    rows.append((feats, y[img]))
    for (a, b), (rows_a, rows_b) in pair_rows.items():
        pa, pb = torch.cat(rows_a), torch.cat(rows_b)
        keep = _sample(len(pa), knn_points, seed)
        atlas.knn[(a, b)] = float(knn_agreement(pa[keep], pb[keep], k))
        atlas.knn_points[(a, b)] = len(keep)
    t2 = time.perf_counter()
    for key, rows in progress_bar(list(pic_rows.items()), desc="atlas: pictures", enabled=progress, leave=False):
        feats, y = torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])
        keep = _sample(len(feats), knn_points, seed)
        atlas.embeddings[key] = project(feats[keep], embedding, seed=seed)
        y = y[keep]
        atlas.embedding_labels[key] = (y if not y.is_floating_point() else torch.zeros_like(y)).numpy().astype(np.int64)
    if pic_rows and atlas.classes is None:
        atlas.classes = [f"class {c}" for c in range(int(max(v.max() for v in atlas.embedding_labels.values())) + 1)]
    atlas.seconds = {
        "cka": round(t1 - t0, 3),
        "knn": round(t2 - t1, 3),
        "embedding": round(time.perf_counter() - t2, 3),
    }
    return atlas


def _named_data(name: str, model_a: nn.Module, n_images: int | None, seed: int):
    """A data set by name for ``compare``: a registered one's test split, or ``folder:<path>`` (all
    its images) resized and cropped to network A's input size (224 px when it has none)."""
    from .datasets import as_dataset

    return as_dataset(
        name, split="test", n=n_images, seed=seed, spec=getattr(model_a, "input_spec", None), progress=False
    )


def _sample(n: int, m: int, seed: int) -> torch.Tensor:
    """``m`` of ``n`` rows, seeded, in increasing order (all of them when m ≥ n)."""
    if m >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:m].sort().values
