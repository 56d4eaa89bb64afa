"""Sparse keypoints (paper 8): train the MF4 / AF4 / AF5 autoencoders, compare their codes with
convolutional sparse coding at the same number of non-zeros per image, and classify from each
representation.

Measured per set-up: reconstruction error (MSE per pixel) on the test split, keypoints per image,
and the error when only the m strongest keypoints per image are decoded. Classification compares:
a small CNN on the sparse keypoint maps, logistic regression on keypoint histograms (type × 4×4
grid), the same two on the sparse-coding codes (matched sparsity: as many non-zeros as the primary
set-up's mean keypoints per image), and the small CNN on raw pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from .._utils import progress_bar, resolve_device, seed_everything
from ..config import ExperimentConfig
from ..datasets import get_dataset, labels_of
from ..engine import fit
from ..methods.keypoints import SETUPS, ConvSparseCoder, Keypoints, SparseKeypointAE, keypoint_histogram
from ..models import build_model
from ..runs import RunDir, config_hash
from . import SavesSummary


@dataclass(frozen=True)
class KeypointsConfig(ExperimentConfig):
    dataset: str = "digits"  # scikit-learn's handwritten digits at 28×28; "mnist" (data/MNIST); "quad" and other shape tasks
    setups: tuple = ("MF4", "AF4", "AF5")
    primary: str = "AF4"  # the set-up the sparse-coding baseline is matched to
    max_keypoints: int = 24
    window: int = 5
    threshold: float = 0.0
    hidden: int = 24
    dropout: float = 0.1
    l1: float = 0.0
    epochs: int = 12
    batch_size: int = 64
    lr: float = 2e-3
    n_train: int | None = None
    n_test: int | None = None
    size: int = 28
    sc_atoms: int = 8
    sc_atom_size: int = 7
    sc_epochs: int = 1
    clf_epochs: int = 25
    keep_levels: tuple = (1, 2, 4, 8, 16, 24)
    device: str = "auto"

    PROFILE_OVERRIDES = {
        "smoke": dict(setups=("MF4", "AF4"), epochs=1, clf_epochs=1, n_train=200, n_test=60, keep_levels=(2, 8)),
        "full": dict(dataset="mnist", epochs=30, clf_epochs=20, batch_size=128, sc_epochs=2, n_train=None, n_test=None),
    }

    def __post_init__(self):
        super().__post_init__()
        bad = [s for s in self.setups if s not in SETUPS]
        if bad:
            raise ValueError(f"unknown set-ups {bad}; allowed: {tuple(SETUPS)}")
        if self.primary not in self.setups:
            object.__setattr__(self, "primary", self.setups[0])
        if self.max_keypoints < 1:
            raise ValueError(f"max_keypoints must be >= 1, got {self.max_keypoints}")


@dataclass
class KeypointsResult(SavesSummary):
    config: KeypointsConfig
    models: dict[str, SparseKeypointAE]
    coder: ConvSparseCoder
    test_images: torch.Tensor
    test_labels: np.ndarray
    class_names: list[str]
    keypoints: dict[str, Keypoints]  # per set-up, on the test images
    recon: list[dict]  # per method: mse, nonzeros per image
    curves: dict[str, dict]  # method → {"keep": [...], "mse": [...]}
    classification: list[dict]
    experiment: RunDir | None = None

    def reconstruct(self, setup: str, image: int, keep: int | None = None, types=None) -> np.ndarray:
        """The decoder's image from the ``keep`` strongest keypoints (of ``types``) of a test image."""
        kp = self.keypoints[setup].of_image(image).select(types=types, top=keep)
        return self.models[setup].decode(kp)[0].numpy()

    def building_blocks(self, setup: str) -> torch.Tensor:
        m = self.models[setup]
        return torch.stack([m.building_block(t, size=tuple(self.test_images.shape[-2:])) for t in range(m.num_types)])

    def summary(self) -> dict:
        return {"reconstruction": self.recon, "curves": self.curves, "classification": self.classification}


def _tensor(ds) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    return x, labels_of(ds)


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.mse_loss(a.float(), b.float()))


def run_keypoints(cfg: KeypointsConfig, *, run_root=None, progress: bool = True) -> KeypointsResult:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    device = resolve_device(cfg.device)
    kw = {"size": cfg.size} if cfg.dataset != "mnist" else {}
    train = get_dataset(cfg.dataset, "train", n=cfg.n_train, **kw)
    val = get_dataset(cfg.dataset, "val", n=None if cfg.n_train is None else max(50, cfg.n_train // 5), **kw)
    test = get_dataset(cfg.dataset, "test", n=cfg.n_test, **kw)
    names = list(train.classes)
    k_cls = len(names)
    xtr, ytr = _tensor(train)
    xte, yte = _tensor(test)
    if xtr.shape[1] != 1:  # the method works on grey images
        xtr, xte = xtr.mean(1, keepdim=True), xte.mean(1, keepdim=True)
        train, val, test = TensorDataset(xtr, ytr), TensorDataset(_tensor(val)[0].mean(1, keepdim=True), labels_of(val)), TensorDataset(xte, yte)
    exp = RunDir(f"keypoints-{cfg.dataset}-{config_hash(cfg)}", run_root)
    exp.write_config(cfg)

    steps = list(cfg.setups) + ["sparse coding", "classifiers"]
    bar = progress_bar(total=len(steps), desc="keypoints", enabled=progress)
    models, kps, recon, curves = {}, {}, [], {}
    for setup in cfg.setups:
        bar.set_postfix_str(f"autoencoder {setup}")
        seed_everything(cfg.seed)
        ae = SparseKeypointAE(setup, in_chans=1, hidden=cfg.hidden, window=cfg.window, max_keypoints=cfg.max_keypoints,
                              threshold=cfg.threshold, dropout=cfg.dropout)
        terms = ["reconstruction"] + ([{"name": "code_l1", "weight": cfg.l1}] if cfg.l1 > 0 else [])
        fit(ae, train, val, objective="reconstruction", terms=terms, epochs=cfg.epochs, optimizer="adamw", lr=cfg.lr,
            weight_decay=0.0, batch_size=cfg.batch_size, device=device, run=RunDir(f"ae-{setup}", exp.path), seed=cfg.seed, progress=False)
        ae.to("cpu").eval()
        kp = ae.encode(xte)
        models[setup], kps[setup] = ae, kp
        recon.append({"method": setup, "mse": _mse(ae.decode(kp), xte), "nonzeros_per_image": float(kp.counts().float().mean())})
        curves[setup] = {"keep": list(cfg.keep_levels), "mse": [_mse(ae.decode(kp.select(top=m)), xte) for m in cfg.keep_levels]}
        bar.update()

    bar.set_postfix_str("sparse coding")
    matched = max(1, int(round(next(r["nonzeros_per_image"] for r in recon if r["method"] == cfg.primary))))
    coder = ConvSparseCoder(cfg.sc_atoms, cfg.sc_atom_size, n_nonzero=matched, seed=cfg.seed).fit(xtr, epochs=cfg.sc_epochs)
    z_te = coder.code(xte)
    recon.append({"method": f"sparse coding (OMP, {matched} non-zeros)", "mse": _mse(coder.reconstruct(z_te), xte),
                  "nonzeros_per_image": float((z_te != 0).flatten(1).sum(1).float().mean())})
    curves["sparse coding"] = {"keep": list(cfg.keep_levels), "mse": []}
    for m in cfg.keep_levels:  # the m largest |coefficients| of the matched code, like the strongest keypoints
        flat = z_te.flatten(1)
        idx = flat.abs().topk(min(m, flat.shape[1]), dim=1).indices
        zm = torch.zeros_like(flat).scatter_(1, idx, flat.gather(1, idx)).view_as(z_te)
        curves["sparse coding"]["mse"].append(_mse(coder.reconstruct(zm), xte))
    bar.update()

    bar.set_postfix_str("classifiers")
    z_tr = coder.code(xtr)
    kp_tr = {s: models[s].encode(xtr) for s in cfg.setups}

    def cnn(name, xa, xb, in_chans):
        seed_everything(cfg.seed)
        net = build_model("smallcnn", k_cls, in_chans=in_chans)
        res = fit(net, TensorDataset(xa, ytr), None, test=TensorDataset(xb, yte), epochs=cfg.clf_epochs, lr=0.05, batch_size=cfg.batch_size,
                  device=device, run=RunDir(f"clf-{name}", exp.path), seed=cfg.seed, progress=False)
        return res.summary["test_acc_last"]

    def logreg(fa, fb):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        return float(clf.fit(fa, ytr.numpy()).score(fb, yte.numpy()))

    rows = [{"representation": "raw pixels", "classifier": "small CNN", "nonzeros_per_image": float(xte[0].numel()),
             "test_acc": cnn("pixels", xtr, xte, 1)}]
    for s in cfg.setups:
        nz = next(r["nonzeros_per_image"] for r in recon if r["method"] == s)
        rows.append({"representation": f"{s} keypoint maps", "classifier": "small CNN", "nonzeros_per_image": nz,
                     "test_acc": cnn(f"{s}-maps", kp_tr[s].to_maps(), kps[s].to_maps(), models[s].num_types)})
        rows.append({"representation": f"{s} keypoint histogram", "classifier": "logistic regression", "nonzeros_per_image": nz,
                     "test_acc": logreg(keypoint_histogram(kp_tr[s]), keypoint_histogram(kps[s]))})
    sc_name = f"sparse coding ({matched} non-zeros)"
    rows.append({"representation": f"{sc_name} maps", "classifier": "small CNN", "nonzeros_per_image": float(matched),
                 "test_acc": cnn("sc-maps", z_tr, z_te, cfg.sc_atoms)})
    sc_tr, sc_te = Keypoints.from_maps(z_tr.abs()), Keypoints.from_maps(z_te.abs())  # |coefficient| as intensity
    rows.append({"representation": f"{sc_name} histogram", "classifier": "logistic regression", "nonzeros_per_image": float(matched),
                 "test_acc": logreg(keypoint_histogram(sc_tr), keypoint_histogram(sc_te))})
    bar.update()
    bar.close()
    return KeypointsResult(cfg, models, coder, xte, yte.numpy(), names, kps, recon, curves, rows, exp)
