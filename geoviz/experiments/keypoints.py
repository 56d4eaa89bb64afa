"""Sparse keypoints (paper 8): train the MF4 / AF4 / AF5 autoencoders, compare their codes with
convolutional sparse coding, and classify from each representation.

Measured per set-up: the training curve (validation reconstruction error per epoch), the
reconstruction error (MSE per pixel) on the test split against the **mean-image floor** (predict
the training set's mean image), keypoints per image, and the error when only the m strongest
keypoints of one code are decoded (the explorer's slider).

**Rate–distortion, fairly.** At every keypoint budget m in ``budgets`` the primary set-up's
autoencoder is *retrained* with ``max_keypoints=m`` (per seed), and the sparse coders re-run at
that budget, with a matched dictionary (as many atoms as AF4 has types, of its block size): OMP with
exactly m non-zeros, and FISTA (L1) with, per image, the penalty that leaves at most m (bisection),
as it comes and with its coefficients refitted by least squares on its support. Each point is reported against non-zeros
per image and against bits per image
(position + type + 8-bit intensity for a keypoint; position + atom index + 8-bit coefficient + sign
for sparse coding), with the codes quantised to those 8 bits before decoding.

Classification compares a small CNN on the sparse keypoint maps, logistic regression on keypoint
histograms (type × 4×4 grid), the same two on the sparse-coding codes (matched sparsity), and the
small CNN on raw pixels. ``dataset="auto"`` reads MNIST from ``data/`` when it is there (capped at
``n_train`` / ``n_test`` images, 3,000 / 1,000 unless set) and uses the embedded digits otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from .._utils import progress_bar, seed_everything
from ..analysis.floors import panel_floor
from ..analysis.statistics import Claim, claim_rows, paired_difference
from ..config import ExperimentConfig
from ..datasets import get_dataset, labels_of
from ..datasets.images import mnist_present
from ..engine import fit
from ..methods.keypoints import (
    SETUPS,
    ConvSparseCoder,
    Keypoints,
    SparseKeypointAE,
    bits_per_nonzero,
    keypoint_histogram,
    quantize,
)
from ..models import build_model, load_state
from ..runs import RunDir, config_hash
from ._study import ExecutionOptions, Study, StudyResult
from .executors import RunUnit

if TYPE_CHECKING:
    from typing_extensions import Unpack


@dataclass(frozen=True)
class KeypointsConfig(ExperimentConfig):
    # "auto": MNIST when in data/, else digits; "digits" (embedded, 28×28); "mnist"; "quad" and other shape tasks
    """Sparse keypoints study (paper 8): ``setups`` (MF4, AF4, AF5) trained at ``max_keypoints``,
    sparse coding matched to ``primary``, rate–distortion at ``budgets`` per seed, classification from
    each code. Profiles: smoke, quick (MNIST from data/ or the embedded digits), full (MNIST)."""

    dataset: str = "auto"
    setups: tuple = ("MF4", "AF4", "AF5")
    primary: str = "AF4"  # the set-up the sparse-coding baseline is matched to
    max_keypoints: int = 24
    window: int = 5
    threshold: float = 0.0
    hidden: int = 48
    dropout: float = 0.1
    # gradients to the kept keypoints only: with the straight-through estimator (ste=True) AF4 on
    # digits stayed at the mean-image floor (test MSE 1.10× it after 8 epochs; 0.82× without; with
    # hidden 48 and lr 5e-3, 0.41×)
    ste: bool = False
    decoder: str = "blocks"  # one learned block per keypoint type (the paper's); "nonlinear": our earlier decoder
    decoder_kernel: int = 11
    output: str = "linear"
    l1: float = 0.0
    epochs: int = 12
    batch_size: int = 64
    lr: float = 5e-3
    n_train: int | None = None
    n_test: int | None = None
    size: int = 28
    sc_atoms: int = 4  # as many atoms as AF4 has keypoint types, of its block size: a matched dictionary
    sc_atom_size: int = 11
    sc_epochs: int = 1
    clf_epochs: int = 20
    keep_levels: tuple = (1, 2, 4, 8, 16, 24)
    budgets: tuple = (4, 8, 16)  # rate–distortion: the autoencoder is retrained at each (24: the set-ups above)
    rd_epochs: int = 8
    seeds: tuple = (0, 1)
    fista_iters: int = 60
    value_bits: int = 8
    # the panel floor's tree ensembles (gradient boosting, random forest): seconds per fit even on a
    # hundred images, so the smoke profile (plumbing, not claims) leaves them out
    floor_trees: bool = True
    device: str = "auto"

    PROFILE_OVERRIDES = {
        "smoke": dict(
            floor_trees=False,
            setups=("MF4", "AF4"),
            epochs=1,
            clf_epochs=1,
            n_train=200,
            n_test=60,
            keep_levels=(2, 8),
            budgets=(4, 8),
            rd_epochs=1,
            seeds=(0,),
            fista_iters=20,
        ),
        "full": dict(
            dataset="mnist",
            epochs=30,
            clf_epochs=20,
            batch_size=128,
            sc_epochs=2,
            n_train=None,
            n_test=None,
            budgets=(2, 4, 8, 16, 24, 32, 48),
            rd_epochs=20,
            seeds=(0, 1, 2),
        ),
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
class KeypointsResult(StudyResult):
    """What ``run_keypoints`` measured.

    Attributes
    ----------
    config : the study's config.
    models : set-up → trained ``SparseKeypointAE`` (CPU, eval mode).
    coder : the convolutional sparse coder matched to the primary set-up's sparsity.
    test_images, test_labels, class_names : the test split.
    keypoints : set-up → ``Keypoints`` of the test images.
    recon : one row per code (the mean-image floor first): test MSE, non-zeros per image.
    curves : method → {"keep": [...], "mse": [...]}: error when only the strongest m are decoded.
    classification : one row per (representation, classifier): test accuracy.
    experiment : the run folder.
    history : set-up → per-epoch records (see ``curves()`` for the ``(arm, seed)`` view).
    rate_distortion : one row per (method, budget, seed).
    dataset : the data set read ("auto" resolved).
    floors : ``mean_image_mse`` (every code must beat it), ``chance`` and ``panel`` (classification: the
        panel floor, cheap feature sets × classifiers on the images, chosen by cross-validation).
    """

    config: KeypointsConfig
    models: dict[str, SparseKeypointAE]
    coder: ConvSparseCoder
    test_images: torch.Tensor
    test_labels: np.ndarray
    class_names: list[str]
    keypoints: dict[str, Keypoints]  # per set-up, on the test images
    recon: list[dict]  # per method: mse, nonzeros per image
    curves_by_keep: dict[str, dict]  # method → {"keep": [...], "mse": [...]}
    classification: list[dict]
    experiment: RunDir | None = None
    history: dict = None  # set-up → [{"epoch", "train_loss", "val_loss"}]
    rate_distortion: list = None  # one row per (method, budget, seed)
    dataset: str = ""  # the data set read ("auto" resolved)
    floors: dict = field(default_factory=dict)

    def table(self) -> list[dict]:
        """The reconstruction rows (the floor first) and the classification rows, tidy."""
        return [{"table": "reconstruction", **r} for r in self.recon] + [
            {"table": "classification", **r} for r in self.classification
        ]

    def curves(self) -> dict[tuple[str, int], list[dict]]:
        """Per-epoch reconstruction losses per ``(set-up, seed)``."""
        return {(setup, self.config.seed): h for setup, h in (self.history or {}).items()}

    def claims(self) -> list[Claim]:
        """At each rate–distortion budget: the retrained keypoint autoencoder reconstructs the test
        images better (lower quantised MSE) than OMP sparse coding with as many non-zeros, paired by seed."""
        cfg, out = self.config, []
        for m in cfg.budgets:
            kp = {r["seed"]: r["mse_quantized"] for r in self.rate_distortion if r["setting"] == f"{m} keypoints"}
            sc = {
                r["seed"]: r["mse_quantized"]
                for r in self.rate_distortion
                if r["method"] == "sparse coding, OMP" and r["setting"] == f"{m} non-zeros"
            }
            seeds = [sd for sd in cfg.seeds if sd in kp and sd in sc]
            d = paired_difference([sc[sd] for sd in seeds], [kp[sd] for sd in seeds]) if len(seeds) >= 2 else None
            out.append(
                Claim.from_paired(
                    f"{cfg.primary} keypoints reconstruct better than OMP sparse coding at equal non-zeros",
                    "test MSE per pixel (8-bit codes), sparse coding minus keypoints",
                    d,
                    n=len(seeds),
                    conditions={"budget": m},
                )
            )
        return out

    def reconstruct(self, setup: str, image: int, keep: int | None = None, types=None) -> np.ndarray:
        """The decoder's image from the ``keep`` strongest keypoints (of ``types``) of a test image."""
        kp = self.keypoints[setup].of_image(image).select(types=types, top=keep)
        return self.models[setup].decode(kp)[0].numpy()

    def building_blocks(self, setup: str) -> torch.Tensor:
        """The decoder's output for a single keypoint of each type of ``setup``."""
        m = self.models[setup]
        return torch.stack([m.building_block(t, size=tuple(self.test_images.shape[-2:])) for t in range(m.num_types)])

    def rd_table(self) -> list[dict]:
        """Rate–distortion rows averaged over seeds (mean ± std of MSE; non-zeros and bits)."""
        out = []
        for key in dict.fromkeys((r["method"], r["setting"]) for r in self.rate_distortion):
            rs = [r for r in self.rate_distortion if (r["method"], r["setting"]) == key]
            mse = [r["mse_quantized"] for r in rs]
            out.append(
                {
                    "method": key[0],
                    "setting": key[1],
                    "n": len(rs),
                    "nonzeros_per_image": float(np.mean([r["nonzeros_per_image"] for r in rs])),
                    "bits_per_image": float(np.mean([r["bits_per_image"] for r in rs])),
                    "mse": float(np.mean(mse)),
                    "mse_std": float(np.std(mse, ddof=1)) if len(mse) > 1 else 0.0,
                    "mse_unquantized": float(np.mean([r["mse"] for r in rs])),
                }
            )
        return out

    def summary(self) -> dict:
        """Reconstruction, truncation curves, classification, histories, rate–distortion, claims, floors."""
        return {
            "reconstruction": self.recon,
            "curves": self.curves_by_keep,
            "classification": self.classification,
            "history": self.history,
            "rate_distortion": self.rd_table(),
            "claims": claim_rows(self.claims()),
            "floors": self.floors,
        }


def _tensor(ds) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    return x, labels_of(ds)


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.mse_loss(a.float(), b.float()))


class KeypointsStudy(Study):
    """Steps: ``prepare`` (data, grey), ``run_units`` (each set-up's autoencoder, and the primary set-up
    retrained at every rate–distortion budget and seed: ``units()``, carried out by the executor),
    ``setups`` (the trained autoencoders read back and scored), ``sparse_coding`` (matched sparsity),
    ``rate_distortion`` (the retrained autoencoders' points beside OMP and FISTA), ``classify`` from each
    representation (the coders and the classifiers run in this process)."""

    key = "keypoints"
    gpus_per_run = 0.25  # small autoencoders at 28-32 px; not measured on a GPU yet

    def steps(self) -> KeypointsResult:
        cfg = self.cfg
        self.prepare()
        self.run_units()
        self.bar = progress_bar(total=len(cfg.budgets) * len(cfg.seeds) + 2, desc="keypoints", enabled=self.progress)
        self.setups()
        self.sparse_coding()
        rd = self.rate_distortion()
        rows = self.classify()
        self.bar.close()
        return KeypointsResult(
            cfg,
            self.models,
            self.coder,
            self.xte,
            self.yte.numpy(),
            self.names,
            self.kps,
            self.recon,
            self.keep_curves,
            rows,
            self.exp,
            history=self.history,
            rate_distortion=rd,
            dataset=self.dataset,
            floors={"mean_image_mse": self.recon[0]["mse"], "chance": 1.0 / len(self.names), "panel": self.panel},
        )

    def run_name(self) -> str:
        """The study's folder: ``keypoints-<data set>-<config hash>``."""
        return f"keypoints-{self.dataset}-{config_hash(self.cfg)}"

    def _setup(self) -> None:
        """The data set ("auto": MNIST when in ``data/``, else digits), made grey."""
        cfg = self.cfg
        dataset, n_train, n_test = cfg.dataset, cfg.n_train, cfg.n_test
        if dataset == "auto":
            dataset = "mnist" if mnist_present() else "digits"
            if dataset == "mnist":  # the quick profile's budget: a class-balanced subset unless set
                n_train, n_test = n_train or 3000, n_test or 1000
        kw = {"size": cfg.size} if dataset != "mnist" else {}
        train = get_dataset(dataset, "train", n=n_train, **kw)
        val = get_dataset(dataset, "val", n=None if n_train is None else max(50, n_train // 5), **kw)
        test = get_dataset(dataset, "test", n=n_test, **kw)
        self.dataset, self.names = dataset, list(train.classes)
        xtr, ytr = _tensor(train)
        xte, yte = _tensor(test)
        if xtr.shape[1] != 1:  # the method works on grey images
            xtr, xte = xtr.mean(1, keepdim=True), xte.mean(1, keepdim=True)
            train, val, test = (
                TensorDataset(xtr, ytr),
                TensorDataset(_tensor(val)[0].mean(1, keepdim=True), labels_of(val)),
                TensorDataset(xte, yte),
            )
        self.train, self.val, self.xtr, self.ytr, self.xte, self.yte = train, val, xtr, ytr, xte, yte

    # the runs as units --------------------------------------------------------------------------
    def units(self) -> list[RunUnit]:
        """``ae-<set-up>`` for every set-up; ``rd-<primary>-k<budget>-s<seed>`` for every budget and seed."""
        cfg = self.cfg
        setups = [RunUnit(f"ae-{s}", inputs={"setup": s}) for s in cfg.setups]
        rd = [
            RunUnit(f"rd-{cfg.primary}-k{m}-s{sd}", inputs={"budget": m, "seed": sd})
            for m in cfg.budgets
            for sd in cfg.seeds
        ]
        return setups + rd

    def measure_unit(self, unit: RunUnit, deps: dict) -> dict:
        """A set-up's autoencoder: its test reconstruction and keep curve; a retrained primary: its
        rate–distortion point."""
        cfg, xte = self.cfg, self.xte
        if "setup" in unit.inputs:
            setup = unit.inputs["setup"]
            ae = self.train_ae(setup, cfg.max_keypoints, cfg.seed, cfg.epochs, unit.key)
            kp = ae.encode(xte)
            return {
                "recon": {
                    "method": setup,
                    "mse": _mse(ae.decode(kp), xte),
                    "nonzeros_per_image": float(kp.counts().float().mean()),
                },
                "keep_curve": {
                    "keep": list(cfg.keep_levels),
                    "mse": [_mse(ae.decode(kp.select(top=m)), xte) for m in cfg.keep_levels],
                },
            }
        m, sd = unit.inputs["budget"], unit.inputs["seed"]
        ae = self.train_ae(cfg.primary, m, sd, cfg.rd_epochs, unit.key)
        bits = bits_per_nonzero(*xte.shape[-2:], ae.num_types, cfg.value_bits)
        return self._rd_row(
            f"{cfg.primary} (retrained)", f"{m} keypoints", sd, ae.encode(xte).to_maps(), ae.decode, bits
        )

    def _rd_row(self, method, setting, seed, code, decode, bits) -> dict:
        """One rate–distortion point: non-zeros and bits per image, test MSE (and with quantised values)."""
        nz = float((code != 0).flatten(1).sum(1).float().mean())
        return {
            "method": method,
            "setting": setting,
            "seed": seed,
            "nonzeros_per_image": nz,
            "bits_per_image": nz * bits,
            "mse": _mse(decode(code), self.xte),
            "mse_quantized": _mse(decode(quantize(code, self.cfg.value_bits)), self.xte),
        }

    def _autoencoder(self, setup: str, budget: int) -> SparseKeypointAE:
        cfg = self.cfg
        return SparseKeypointAE(
            setup,
            in_chans=1,
            hidden=cfg.hidden,
            window=cfg.window,
            max_keypoints=budget,
            threshold=cfg.threshold,
            dropout=cfg.dropout,
            decoder=cfg.decoder,
            decoder_kernel=cfg.decoder_kernel,
            output=cfg.output,
            ste=cfg.ste,
        )

    def train_ae(self, setup: str, budget: int, seed: int, epochs: int, name: str) -> SparseKeypointAE:
        """One autoencoder of ``setup`` at ``budget`` keypoints, trained in run folder ``name`` (CPU, eval mode)."""
        cfg = self.cfg
        seed_everything(seed)
        ae = self._autoencoder(setup, budget)
        terms = ["reconstruction"] + ([{"name": "code_l1", "weight": cfg.l1}] if cfg.l1 > 0 else [])
        fit(
            ae,
            self.train,
            self.val,
            objective="reconstruction",
            terms=terms,
            epochs=epochs,
            optimizer="adamw",
            lr=cfg.lr,
            weight_decay=0.0,
            batch_size=cfg.batch_size,
            device=self.device,
            run=self.arm_run(name),
            seed=seed,
            progress=False,
        )
        return ae.to("cpu").eval()

    def setups(self) -> None:
        """Each set-up's autoencoder at ``max_keypoints`` (its last epoch, read from ``ae-<set-up>/``), its
        keypoints of the test images; its test reconstruction against the mean-image floor."""
        cfg, xtr, xte, results = self.cfg, self.xtr, self.xte, self.units_report.results
        self.models, self.kps, self.keep_curves, self.history = {}, {}, {}, {}
        # the floor: the training set's mean image for every test image
        self.recon = [
            {
                "method": "mean image (floor)",
                "mse": _mse(xtr.mean(0, keepdim=True).expand_as(xte), xte),
                "nonzeros_per_image": 0.0,
            }
        ]
        for setup in cfg.setups:
            done = results[f"ae-{setup}"]
            ae = self._autoencoder(setup, cfg.max_keypoints)
            load_state(ae, self.arm_run(f"ae-{setup}").checkpoint_path())
            self.models[setup] = ae.eval()
            self.kps[setup] = ae.encode(xte)
            self.history[setup] = [
                {k: h[k] for k in ("epoch", "train_loss", "val_loss") if k in h} for h in done["history"]
            ]
            self.recon.append(done["row"]["recon"])
            self.keep_curves[setup] = done["row"]["keep_curve"]

    def sparse_coding(self) -> None:
        """Convolutional sparse coding with as many non-zeros per image as the primary set-up keeps."""
        cfg, xtr, xte = self.cfg, self.xtr, self.xte
        self.bar.set_postfix_str("sparse coding")
        self.matched = max(
            1, int(round(next(r["nonzeros_per_image"] for r in self.recon if r["method"] == cfg.primary)))
        )
        self.coder = ConvSparseCoder(cfg.sc_atoms, cfg.sc_atom_size, n_nonzero=self.matched, seed=cfg.seed).fit(
            xtr, epochs=cfg.sc_epochs
        )
        self.z_te = z_te = self.coder.code(xte)
        self.recon.append(
            {
                "method": f"sparse coding (OMP, {self.matched} non-zeros)",
                "mse": _mse(self.coder.reconstruct(z_te), xte),
                "nonzeros_per_image": float((z_te != 0).flatten(1).sum(1).float().mean()),
            }
        )
        self.keep_curves["sparse coding"] = {"keep": list(cfg.keep_levels), "mse": []}
        for m in cfg.keep_levels:  # the m largest |coefficients| of the matched code, like the strongest keypoints
            flat = z_te.flatten(1)
            idx = flat.abs().topk(min(m, flat.shape[1]), dim=1).indices
            zm = torch.zeros_like(flat).scatter_(1, idx, flat.gather(1, idx)).view_as(z_te)
            self.keep_curves["sparse coding"]["mse"].append(_mse(self.coder.reconstruct(zm), xte))
        self.bar.update()

    def rate_distortion(self) -> list[dict]:
        """At every budget and seed: the primary set-up retrained (its unit), OMP re-run (FISTA for the first seed)."""
        cfg, xtr, xte = self.cfg, self.xtr, self.xte
        h, w = xte.shape[-2:]
        rd, coders = [], {}
        sc_bits = bits_per_nonzero(h, w, cfg.sc_atoms, cfg.value_bits, signed=True)
        rd_row = self._rd_row
        for m, sd in [(m, sd) for m in cfg.budgets for sd in cfg.seeds]:
            self.bar.set_postfix_str(f"rate–distortion: sparse coding at {m} non-zeros, seed {sd}")
            rd.append(self.units_report.results[f"rd-{cfg.primary}-k{m}-s{sd}"]["row"])
            if sd not in coders:
                coders[sd] = ConvSparseCoder(cfg.sc_atoms, cfg.sc_atom_size, n_nonzero=max(cfg.budgets), seed=sd).fit(
                    xtr, epochs=cfg.sc_epochs
                )
            rd.append(
                rd_row(
                    "sparse coding, OMP",
                    f"{m} non-zeros",
                    sd,
                    coders[sd].code(xte, n_nonzero=m),
                    coders[sd].reconstruct,
                    sc_bits,
                )
            )
            self.bar.update()
            if (
                sd == cfg.seeds[0]
            ):  # FISTA (the slowest coder: a bisection of full solves) with the first seed's dictionary
                # per image, the penalty that leaves at most m non-zeros (as OMP gets m per image)
                lam = coders[sd].penalty_for(xte, m, cfg.fista_iters, steps=7)
                z = coders[sd].code_l1(xte, lam, cfg.fista_iters)
                z = torch.where(z.abs() > 1e-6, z, torch.zeros_like(z))
                rd.append(rd_row("sparse coding, FISTA (L1)", f"{m} non-zeros", sd, z, coders[sd].reconstruct, sc_bits))
                rd.append(
                    rd_row(
                        "sparse coding, FISTA + least squares",
                        f"{m} non-zeros",
                        sd,
                        coders[sd].refit(xte, z),
                        coders[sd].reconstruct,
                        sc_bits,
                    )
                )
        return rd

    def classify(self) -> list[dict]:
        """A small CNN on raw pixels and on each code's maps; logistic regression on each code's
        histograms; the panel floor on the images."""
        cfg, xtr, xte = self.cfg, self.xtr, self.xte
        self.bar.set_postfix_str("classifiers")
        z_tr, z_te = self.coder.code(xtr), self.z_te
        cnn, logreg, hist = self._cnn_accuracy, self._logreg_accuracy, keypoint_histogram

        def row(representation, classifier, nonzeros, accuracy):
            return {
                "representation": representation,
                "classifier": classifier,
                "nonzeros_per_image": nonzeros,
                "test_acc": accuracy,
            }

        kp_train = {s: self.models[s].encode(xtr) for s in cfg.setups}  # before any classifier, as always
        rows = [row("raw pixels", "small CNN", float(xte[0].numel()), cnn("pixels", xtr, xte, 1))]
        for s in cfg.setups:
            nz, kp_tr, kp_te = (
                next(r["nonzeros_per_image"] for r in self.recon if r["method"] == s),
                kp_train[s],
                self.kps[s],
            )
            maps = cnn(f"{s}-maps", kp_tr.to_maps(), kp_te.to_maps(), self.models[s].num_types)
            rows.append(row(f"{s} keypoint maps", "small CNN", nz, maps))
            rows.append(row(f"{s} keypoint histogram", "logistic regression", nz, logreg(hist(kp_tr), hist(kp_te))))
        sc_name, nz = f"sparse coding ({self.matched} non-zeros)", float(self.matched)
        rows.append(row(f"{sc_name} maps", "small CNN", nz, cnn("sc-maps", z_tr, z_te, cfg.sc_atoms)))
        sc_tr, sc_te = Keypoints.from_maps(z_tr.abs()), Keypoints.from_maps(z_te.abs())  # |coefficient| as intensity
        rows.append(row(f"{sc_name} histogram", "logistic regression", nz, logreg(hist(sc_tr), hist(sc_te))))
        # the floor every representation must beat: cheap models on the images themselves
        floor = panel_floor(
            xtr, self.ytr.numpy(), {"test": (xte, self.yte.numpy())}, seed=cfg.seed, trees=cfg.floor_trees
        )
        self.panel = floor.accuracy["test"]
        rows.append(row(f"panel floor: {floor.features}", floor.classifier, float(xte[0].numel()), self.panel))
        self.bar.update()
        return rows

    def _cnn_accuracy(self, name: str, x_train, x_test, in_chans: int) -> float:
        """Test accuracy of a small CNN trained (run folder ``clf-<name>``) on a representation."""
        cfg = self.cfg
        seed_everything(cfg.seed)
        net = build_model("smallcnn", len(self.names), in_chans=in_chans)
        train, test = TensorDataset(x_train, self.ytr), TensorDataset(x_test, self.yte)
        run = self.arm_run(f"clf-{name}")
        res = fit(
            net,
            train,
            None,
            test=test,
            epochs=cfg.clf_epochs,
            lr=0.05,
            batch_size=cfg.batch_size,
            device=self.device,
            run=run,
            seed=cfg.seed,
            progress=False,
        )
        return res.summary["test_acc_last"]

    def _logreg_accuracy(self, f_train, f_test) -> float:
        """Test accuracy of a standardised logistic regression on features."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        return float(clf.fit(f_train, self.ytr.numpy()).score(f_test, self.yte.numpy()))


def run_keypoints(
    cfg: KeypointsConfig,
    *,
    run_root=None,
    progress: bool = True,
    reuse: str | None = None,
    **execution: Unpack[ExecutionOptions],
) -> KeypointsResult:
    """Train the keypoint autoencoders, the matched sparse coder, the rate–distortion points and the
    classifiers (``KeypointsStudy``); writes ``runs/keypoints-<data>-<hash>/``. ``executor="ray"`` hands
    each autoencoder's training to a Ray task (see ``run_transfer``); both give the same result."""
    return KeypointsStudy.launch(cfg, run_root=run_root, progress=progress, reuse=reuse, **execution)
