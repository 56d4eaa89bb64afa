"""CNNMDA study (paper 7, Xuan et al. 2019): k-fold cross-validation of the dual-branch CNN against
four baselines on miRNA–disease associations, synthetic (planted truth) or read from ``data/mda``.

Per fold: the fold's known associations are the test positives and are **masked from every
input** — set to 0 in the association matrix the left rows read, the NMF factorises and, where the
miRNA similarity is derived from associations (``mirna_similarity="misim"``), that similarity is
computed from. The training pairs are the other known associations and as many unknown pairs drawn
at random (balanced negative sampling); the evaluation pairs are the test positives and every
unknown pair not drawn for training; all of it is chosen from the fold's training associations
alone. Every method scores the same evaluation pairs: the CNN (trained through the engine on
cross-fitted inputs, so that no pair's association, training or test, is in its own inputs; kept at the epoch with the
best accuracy on a held-out tenth of its training pairs),
the NMF reconstruction (its rank chosen on the training associations), the
similarity-weighted neighbour score, a logistic regression on the left rows and their product
(fitted on the same training pairs, through the same cross-fitted inputs) and popularity (the product of the two nodes'
numbers of
known associations). AUC and AUPR per fold (scikit-learn).

Claims, paired by fold and three-valued: the CNN beats each baseline, in AUC and in AUPR. The
folds share training data, so the plain t interval over folds is too narrow; the interval here
uses Nadeau & Bengio's (2003) corrected variance, sd²·(1/n + n_test/n_train) over the n = r·k
differences of r repeats of k folds on one data set (Bouckaert & Frank 2004), n_test/n_train =
1/(k − 1). On synthetic data the claims hold for one draw of the data set (``seed``); whether they
hold for the generator takes several draws, compared by their per-draw means. The correction
assumes disjoint test sets; here the unknown pairs are evaluated in every fold, so the interval
may still be narrow. On a synthetic set, recovery of the planted associations that ``A`` never showed is
reported too (AUC of the hidden truth against the pairs outside the truth, among each fold's
evaluation pairs). Case study: a model trained on every known association (its negatives drawn
outside the chosen disease) ranks that disease's unknown miRNAs (top k).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from .._utils import seed_everything
from ..analysis.statistics import NAN, Claim, claim_rows, verdict
from ..config import ExperimentConfig
from ..datasets.associations import AssociationData, load_mda, make_synthetic_mda
from ..engine import fit
from ..methods.cnnmda import (
    CNNMDA,
    CrossFitted,
    MisimRows,
    PairFeatures,
    auc_aupr,
    neighbour_scores,
    nmf_factors,
    nmf_scores,
    score_pairs,
)
from ..runs import RunDir, config_hash
from ._study import ExecutionOptions, Study, StudyResult
from .executors import RunUnit

if TYPE_CHECKING:
    from typing_extensions import Unpack

METHODS = ("cnnmda", "nmf", "neighbours", "logistic", "popularity")
NMF_RANKS = (4, 8, 16, 32)  # the NMF baseline's rank is chosen among these on the training associations
SIMILARITY = ("auto", "given", "misim")


@dataclass(frozen=True)
class CnnmdaConfig(ExperimentConfig):
    """CNNMDA study (paper 7): ``data`` (synthetic with a planted truth, or files in data/mda), ``folds``-fold
    cross-validation ``repeats`` times of the dual-branch CNN against NMF, neighbour, logistic and
    popularity scores; ``disease`` the case study. Profiles: smoke, quick, full."""

    data: str = "synthetic"  # "files": data/mda/ (HMDD-derived; see data/README.md)
    n_mirna: int = 495  # synthetic: HMDD v2.0's sizes
    n_disease: int = 383
    n_assoc: int = 5430
    planted_rank: int = 8
    hidden: float = 0.2  # synthetic: the share of the planted truth A does not show
    noise: float = 0.5
    similarity_noise: float = 0.05  # synthetic: how far the similarities stray from the planted factors
    # "given" (the file / the synthetic factors), "misim" (from each fold's training associations); auto: misim for
    # files
    mirna_similarity: str = "auto"
    rank: int = 16  # NMF rank of the right branch
    # every pair read through inputs (rows, NMF, a derived similarity) with its chunk of the associations hidden; 0: the
    # paper's one NMF of them all
    crossfit: int = 10
    folds: int = 5
    repeats: int = 1  # the k-fold run this many times on the same data, each on a new partition (seed + repeat)
    epochs: int = 16  # at most: the epoch is chosen on validation (val_share); 12 epochs without it overfit by 24
    val_share: float = 0.1  # training pairs held out to choose the epoch (0: keep the last epoch)
    lr: float = 0.002
    batch_size: int = 64
    negatives: float = 1.0  # unknown pairs drawn per training association
    channels: int = 16
    top_k: int = 20
    disease: str | None = None  # the case study's disease (None: the one with the most known associations)
    confidence: float = 0.95
    device: str = "auto"

    PROFILE_OVERRIDES = {
        "smoke": dict(
            n_mirna=60, n_disease=40, n_assoc=300, planted_rank=4, rank=4, folds=3, epochs=1, channels=4, top_k=5
        ),
        "full": dict(
            data="files", folds=5, repeats=3, epochs=40, channels=32
        ),  # the HMDD-derived files in data/mda (a GPU helps)
    }

    def __post_init__(self):
        super().__post_init__()
        if self.data not in ("synthetic", "files"):
            raise ValueError(f"data must be 'synthetic' or 'files' (data/mda/), got {self.data!r}")
        if self.mirna_similarity not in SIMILARITY:
            raise ValueError(f"mirna_similarity must be one of {SIMILARITY}, got {self.mirna_similarity!r}")
        if self.folds < 2:
            raise ValueError(f"cross-validation needs at least 2 folds, got {self.folds}")
        if self.crossfit == 1 or self.crossfit < 0:
            raise ValueError(
                f"crossfit is a number of chunks (at least 2) or 0 for the paper's shared NMF, got {self.crossfit}"
            )
        if self.repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {self.repeats}")

    @property
    def similarity(self) -> str:
        """The miRNA similarity in use (``auto`` resolved: given for files, MISIM otherwise)."""
        return (
            ("misim" if self.data == "files" else "given") if self.mirna_similarity == "auto" else self.mirna_similarity
        )


def load_data(cfg: CnnmdaConfig) -> AssociationData:
    """The association data the config names: synthetic (seeded) or read from data/mda."""
    if cfg.data == "files":
        return load_mda()
    return make_synthetic_mda(
        cfg.n_mirna,
        cfg.n_disease,
        cfg.n_assoc,
        rank=cfg.planted_rank,
        hidden=cfg.hidden,
        noise=cfg.noise,
        similarity_noise=cfg.similarity_noise,
        seed=cfg.seed,
    )


def fold_positives(A: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """The known associations, shuffled and split into ``folds`` (k, 2) index arrays."""
    pos = np.argwhere(A == 1)
    pos = pos[np.random.default_rng(seed).permutation(len(pos))]
    return np.array_split(pos, folds)


def masked(A: np.ndarray, test_pos: np.ndarray) -> np.ndarray:
    """The associations a fold trains on: ``A`` with its test associations ``test_pos`` set to unknown."""
    A_train = A.copy()
    A_train[test_pos[:, 0], test_pos[:, 1]] = 0
    return A_train


def fold_inputs(data: AssociationData, test_pos: np.ndarray, cfg: CnnmdaConfig) -> dict:
    """Everything a fold's methods read, built from the associations with ``test_pos`` masked."""
    A_train = masked(data.A, test_pos)
    derive = (lambda A: MisimRows(A, data.SD)) if cfg.similarity == "misim" else None  # noqa: E731
    rows = derive(A_train) if derive else None
    SM = rows.full.numpy() if rows is not None else data.SM
    W, H = nmf_factors(A_train, cfg.rank, seed=cfg.seed)
    return {
        "A_train": A_train,
        "SM": SM,
        "W": W,
        "H": H,
        "features": PairFeatures(SM, data.SD, A_train, W, H, similarity_rows=rows),
        "similarity": derive,
    }


def fold_pairs(A_train: np.ndarray, negatives: float, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training positives, training negatives, evaluation pairs) from the fold's training
    associations alone: negatives are drawn among the pairs ``A_train`` shows as unknown (a test
    association may be drawn, as it would be in use), and every other such pair is evaluated."""
    pos, unknown = np.argwhere(A_train == 1), np.argwhere(A_train == 0)
    drawn = rng.choice(len(unknown), min(len(unknown) - 1, int(round(negatives * len(pos)))), replace=False)
    return pos, unknown[drawn], np.delete(unknown, drawn, axis=0)


def choose_nmf_rank(A_train: np.ndarray, ranks=NMF_RANKS, *, seed: int = 0, share: float = 0.1) -> int:
    """The NMF baseline's rank: hide ``share`` of the training associations, factorise the rest at
    each rank, keep the rank whose reconstruction ranks the hidden ones highest (AUC against the
    unknown pairs). Uses the training associations only."""
    rng = np.random.default_rng(seed)
    pos = np.argwhere(A_train == 1)
    hide = pos[rng.choice(len(pos), max(1, int(share * len(pos))), replace=False)]
    inner = A_train.copy()
    inner[hide[:, 0], hide[:, 1]] = 0
    unknown = np.argwhere(A_train == 0)
    pairs = np.concatenate([hide, unknown])
    labels = np.r_[np.ones(len(hide)), np.zeros(len(unknown))]
    aucs = {
        r: auc_aupr(nmf_scores(*nmf_factors(inner, r, seed=seed), pairs), labels)["auc"]
        for r in ranks
        if r < min(A_train.shape)
    }
    return max(aucs, key=aucs.get)


def popularity_scores(A_train: np.ndarray, pairs) -> np.ndarray:
    """How many known associations the miRNA and the disease have (the product): a floor that
    knows nothing about which pairs go together."""
    p = np.asarray(pairs).reshape(-1, 2)
    return A_train.sum(1)[p[:, 0]].astype(np.float64) * A_train.sum(0)[p[:, 1]]


def corrected_interval(diffs, folds: int, confidence: float = 0.95) -> dict:
    """Mean paired difference over the folds of (repeated) k-fold CV with Nadeau & Bengio's
    corrected t interval: variance × (1/n + 1/(k − 1)) for n differences, n − 1 degrees of freedom."""
    from scipy import stats

    d = np.asarray(diffs, dtype=np.float64)
    k = len(d)
    m = float(d.mean())
    se = float(d.std(ddof=1)) * np.sqrt(1.0 / k + 1.0 / (folds - 1)) if k > 1 else float("nan")
    h = float(stats.t.ppf(0.5 + confidence / 2, k - 1)) * se if k > 1 else float("nan")
    lo, hi = float(m - h), float(m + h)
    return {"mean": m, "ci": [lo, hi], "verdict": verdict(lo, hi) if np.isfinite(h) else "undecided"}


@dataclass
class CnnmdaResult(StudyResult):
    """What ``run_cnnmda`` measured.

    Attributes
    ----------
    config : the study's config.
    data : the association data (similarities, known associations, planted truth when synthetic).
    folds : per fold: n_test_pos, n_eval, per method AUC / AUPR, curves, planted-truth recovery.
    histories : ``(fold, seed)`` → the CNN's per-epoch records (and ``("all", seed)``: the final model).
    top : the case study: the chosen disease's top-k unknown miRNAs.
    disease : the case study's disease.
    embedding : pair embeddings of the final model: features, kind, names, score.
    experiment : the run folder.
    final : (model, PairFeatures, its training negatives) trained on every known association.
    floors : per fold, mean AUC / AUPR of the popularity score (the floor every scorer must beat).
    """

    config: CnnmdaConfig
    data: AssociationData
    folds: list[dict]  # per fold: n_test_pos, n_eval, per method auc / aupr, curves, planted-truth recovery
    histories: dict
    top: list[dict] = field(default_factory=list)  # the case study: the chosen disease's top-k unknown miRNAs
    disease: str = ""
    embedding: dict = field(default_factory=dict)  # pair embeddings of the final model: features, kind, names
    experiment: RunDir | None = None
    final: tuple | None = (
        None  # (model, PairFeatures, its training negatives) trained on every known association: the case studies
    )

    def top_candidates(self, disease: str, k: int | None = None) -> list[dict]:
        """The disease's unknown miRNAs ranked by the final model (trained on every known
        association), best first, each saying whether the final model was trained on it as a
        negative (never, for the case study's disease); synthetic data also say whether each is
        in the planted truth."""
        model, features, negatives = self.final
        data, j = self.data, _disease_index(self.data, disease)
        candidates = np.flatnonzero(data.A[:, j] == 0)
        s = score_pairs(model, features, np.stack([candidates, np.full_like(candidates, j)], 1))
        order = np.argsort(-s, kind="stable")[: k or self.config.top_k]
        trained_negative = set(negatives[negatives[:, 1] == j, 0].tolist())
        return [
            {
                "rank": r + 1,
                "mirna": data.mirnas[candidates[o]],
                "score": float(s[o]),
                "trained_as_negative": int(candidates[o]) in trained_negative,
                **({"in_planted_truth": bool(data.truth[candidates[o], j])} if data.truth is not None else {}),
            }
            for r, o in enumerate(order)
        ]

    def table(self) -> list[dict]:
        """Per method: AUC, AUPR (and AUC on the hidden truth) mean ± std over folds."""
        out = []
        for m in METHODS:
            row = {"method": m}
            for key in ("auc", "aupr", "auc_hidden"):
                v = [f[m][key] for f in self.folds if key in f[m]]
                if v:
                    row[key], row[key + "_std"] = float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
            out.append(row)
        return out

    @property
    def floors(self) -> dict:
        """The popularity score's mean AUC and AUPR over folds: the floor every scorer must beat."""
        return (
            {f"popularity_{k}": float(np.mean([f["popularity"][k] for f in self.folds])) for k in ("auc", "aupr")}
            if self.folds
            else {}
        )

    def claims(self) -> list[Claim]:
        """CNNMDA minus each baseline, AUC and AUPR, per fold; the resampled-t interval corrected for
        the folds' overlapping training sets (``corrected_interval``) decides."""
        out = []
        for base in METHODS[1:]:
            for key in ("auc", "aupr"):
                diffs = [f["cnnmda"][key] - f[base][key] for f in self.folds]
                c = corrected_interval(diffs, self.config.folds, self.config.confidence)
                out.append(
                    Claim(
                        f"CNNMDA beats {base} ({key.upper()}, per fold)",
                        f"{key.upper()}, CNNMDA minus {base}",
                        c["mean"],
                        tuple(c["ci"]),
                        NAN,
                        len(diffs),
                        "folds (corrected resampled t)",
                        c["verdict"],
                        conditions={"score": key.upper(), "baseline": base},
                    )
                )
        return out

    def summary(self) -> dict:
        """The table, the claims, the folds (without curves), the case study and the data."""
        folds = [{k: v for k, v in f.items() if k != "curves"} for f in self.folds]
        return {
            "table": self.table(),
            "claims": claim_rows(self.claims()),
            "folds": folds,
            "disease": self.disease,
            "top": self.top,
            "data": repr(self.data),
            "similarity": self.config.similarity,
        }


def _disease_index(data: AssociationData, disease: str) -> int:
    if disease not in data.diseases:
        import difflib

        raise KeyError(
            f"disease {disease!r} is not in the data; close matches: "
            f"{difflib.get_close_matches(disease, data.diseases, n=5) or 'none'}"
        )
    return data.diseases.index(disease)


def cnn_inputs(cfg: CnnmdaConfig, inp: dict, seed: int):
    """What the CNN (and the logistic regression) read pairs through: cross-fitted inputs in
    ``cfg.crossfit`` chunks, or with ``crossfit=0`` the paper's shared ones (``inp`` from ``fold_inputs``)."""
    if not cfg.crossfit:
        return inp["features"]
    return CrossFitted(inp["features"], cfg.crossfit, seed=seed, similarity=inp["similarity"])


def _fit_cnn(cfg, features, pos: np.ndarray, neg: np.ndarray, device, run, seed: int):
    """Train one CNN on ``features`` (``cnn_inputs``); with
    ``val_share`` > 0 that share of the training pairs (positives and negatives alike) is held out
    and the epoch with the best validation accuracy is kept (the engine's best checkpoint; ties to
    the lower loss). Returns (model, history, chosen epoch)."""
    pairs = np.concatenate([pos, neg])
    y = torch.cat([torch.ones(len(pos), dtype=torch.long), torch.zeros(len(neg), dtype=torch.long)])
    x = features.pairs(pairs)
    val = None
    if cfg.val_share > 0:
        held = np.random.default_rng(seed).random(len(pairs)) < cfg.val_share
        val = torch.utils.data.TensorDataset(x[held], y[held])
        x, y = x[~held], y[~held]
    seed_everything(seed)
    model = CNNMDA(features.n_left, features.n_right, channels=cfg.channels)
    res = fit(
        model,
        torch.utils.data.TensorDataset(x, y),
        val,
        epochs=cfg.epochs,
        lr=cfg.lr,
        optimizer="adamw",
        weight_decay=1e-4,
        batch_size=cfg.batch_size,
        device=device,
        run=run,
        seed=seed,
        progress=False,
        amp="off",
    )
    chosen = len(res.history)
    if val is not None and res.best_state is not None:
        model.load_state_dict(res.best_state)
        keys = [(h["val_acc"], -h["val_loss"]) for h in res.history]
        chosen = keys.index(max(keys)) + 1
    return model, res.history, chosen


def _logistic(features, pos, neg, eval_pairs, seed: int, chunk: int = 20000) -> np.ndarray:
    """A logistic regression on the left rows, read through the CNN's inputs (cross-fitted alike)."""
    from sklearn.linear_model import LogisticRegression

    def rows(p):  # the two rows and their element-wise product: Σ_k SM[i,k]·A[k,j] (a neighbour vote) is linear in it
        x = features.left(p[:, 0], p[:, 1])
        return torch.cat([x.flatten(1), x[:, 0] * x[:, 1]], 1).numpy()

    pairs = np.concatenate([pos, neg])
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    clf = LogisticRegression(max_iter=1000, C=1.0, random_state=seed).fit(rows(pairs), y)
    return np.concatenate(
        [clf.predict_proba(rows(eval_pairs[s : s + chunk]))[:, 1] for s in range(0, len(eval_pairs), chunk)]
    )


def _curves(scores, labels, points: int = 200) -> dict:
    """ROC and PR curves thinned to about ``points`` points each (for plotting)."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    prec, rec, _ = precision_recall_curve(labels, scores)
    keep = lambda n: np.unique(np.linspace(0, n - 1, min(n, points)).round().astype(int))  # noqa: E731
    r, p = keep(len(fpr)), keep(len(rec))
    return {"fpr": fpr[r].tolist(), "tpr": tpr[r].tolist(), "recall": rec[p].tolist(), "precision": prec[p].tolist()}


class CnnmdaStudy(Study):
    """Steps: ``prepare`` (data, the case-study disease checked, the run folder), ``run_units`` (every
    repeat and fold, CNNMDA and the baselines on the same pairs: ``units()``, carried out by the
    executor), ``gather``, ``_case_study`` (a model on every known association ranks one disease's
    unknown miRNAs; in this process, after the folds)."""

    key = "cnnmda"
    gpus_per_run = 0.25  # a small CNN on pair features; not measured on a GPU yet

    def steps(self) -> CnnmdaResult:
        cfg = self.cfg
        self._setup()
        if cfg.disease is not None:
            _disease_index(self.data, cfg.disease)  # an unknown disease fails before any training
        self.open_run(self.run_name())
        self.run_units()
        result = CnnmdaResult(cfg, self.data, self.gather(), self.histories, experiment=self.exp)
        _case_study(result, self.device, self.exp)
        return result

    def run_name(self) -> str:
        """The study's folder: ``cnnmda-<config hash>``."""
        return f"cnnmda-{config_hash(self.cfg)}"

    def _setup(self) -> None:
        self.data = load_data(self.cfg)

    def units(self) -> list[RunUnit]:
        """Every (repeat, fold), in folder ``fold<f>`` (``repeat<r>-fold<f>`` with several repeats)."""
        cfg = self.cfg
        return [
            RunUnit(f"fold{f}" if cfg.repeats == 1 else f"repeat{r}-fold{f}", inputs={"repeat": r, "fold": f})
            for r in range(cfg.repeats)
            for f in range(cfg.folds)
        ]

    def measure_unit(self, unit: RunUnit, deps: dict) -> dict:
        """One fold: the CNN trained in its folder and every method scored on the same pairs. A repeat's
        folds draw their negatives from one generator in fold order; the earlier folds' draws are replayed
        (cheap: they depend on the masked associations alone), so a fold run alone draws what it would in sequence."""
        cfg, data = self.cfg, self.data
        r, f = unit.inputs["repeat"], unit.inputs["fold"]
        rng = np.random.default_rng(cfg.seed + r)
        tests = fold_positives(data.A, cfg.folds, cfg.seed + r)
        for earlier in tests[:f]:
            fold_pairs(masked(data.A, earlier), cfg.negatives, rng)
        row = _fold(cfg, data, tests[f], rng, self.device, self.arm_run(unit.key), cfg.seed + 100 * r + f)
        return {**row, "repeat": r, "fold": f}

    def gather(self) -> list[dict]:
        """The folds' rows in order (their histories kept under ``(folder, seed)``)."""
        folds = []
        for unit in self.units():
            done = self.units_report.results[unit.key]
            r, f = unit.inputs["repeat"], unit.inputs["fold"]
            self.histories[(unit.key, self.cfg.seed + 100 * r + f)] = done["history"]
            folds.append(done["row"])
        return folds


def run_cnnmda(
    cfg: CnnmdaConfig,
    *,
    run_root=None,
    progress: bool = True,
    reuse: str | None = None,
    **execution: Unpack[ExecutionOptions],
) -> CnnmdaResult:
    """k-fold cross-validation of CNNMDA against NMF, neighbour, logistic and popularity scores, then
    the case study (``CnnmdaStudy``); writes ``runs/cnnmda-<hash>/`` with one folder per fold.
    ``executor="ray"`` hands each fold to a Ray task (see ``run_transfer``); both give the same result."""
    return CnnmdaStudy.launch(cfg, run_root=run_root, progress=progress, reuse=reuse, **execution)


def _fold(cfg, data: AssociationData, test_pos: np.ndarray, rng, device, run: RunDir, seed: int) -> dict:
    """One fold: every method scores the same evaluation pairs; AUC, AUPR, curves and (synthetic)
    recovery of the hidden truth."""
    inp = fold_inputs(data, test_pos, cfg)
    train_pos, neg, eval_pairs = fold_pairs(inp["A_train"], cfg.negatives, rng)
    labels = data.A[eval_pairs[:, 0], eval_pairs[:, 1]].astype(
        int
    )  # the fold's test associations, as the only positives
    pairs_in = cnn_inputs(cfg, inp, seed)
    model, _, chosen = _fit_cnn(cfg, pairs_in, train_pos, neg, device, run, seed)  # its history: the run's epochs
    nmf_rank = choose_nmf_rank(inp["A_train"], seed=cfg.seed)
    scores = {
        "cnnmda": score_pairs(model.to(device), pairs_in, eval_pairs, device=device),
        "nmf": nmf_scores(*nmf_factors(inp["A_train"], nmf_rank, seed=cfg.seed), eval_pairs),
        "neighbours": neighbour_scores(inp["SM"], data.SD, inp["A_train"], eval_pairs),
        "logistic": _logistic(pairs_in, train_pos, neg, eval_pairs, cfg.seed),
        "popularity": popularity_scores(inp["A_train"], eval_pairs),
    }
    row = {
        "n_test_pos": int(labels.sum()),
        "n_eval": len(eval_pairs),
        "nmf_rank": nmf_rank,
        "epoch_chosen": chosen,
        "curves": {},
    }
    if isinstance(
        pairs_in, CrossFitted
    ):  # how well the chunk NMFs' components match the shared one's (cosine per component)
        cos = np.concatenate(pairs_in.alignment)
        row.update(
            alignment_min_cosine=float(cos.min()), alignment_below_half=f"{int((cos < 0.5).sum())} of {len(cos)}"
        )
    for m, s in scores.items():
        row[m] = auc_aupr(s, labels)
        row["curves"][m] = _curves(s, labels)
        if data.truth is not None:  # the planted associations A never showed, against the pairs outside the truth
            t = data.truth[eval_pairs[:, 0], eval_pairs[:, 1]]
            hidden = (labels == 0) & (t == 1)
            outside = t == 0
            if hidden.any():
                row[m]["auc_hidden"] = auc_aupr(s[hidden | outside], hidden[hidden | outside].astype(int))["auc"]
    return row


def _case_study(result: CnnmdaResult, device, exp: RunDir) -> None:
    """A model trained on every known association (nothing masked, inputs cross-fitted as in the
    folds) ranks the chosen disease's unknown miRNAs; its pair embeddings for the UMAP (known,
    unknown and top-predicted pairs). Its negatives are drawn outside the chosen disease, so no
    candidate there was trained towards 0; for other diseases, candidates that were are marked."""
    cfg, data = result.config, result.data
    rng = np.random.default_rng(cfg.seed + 1000)
    j = _disease_index(data, cfg.disease) if cfg.disease is not None else int(np.argmax(data.A.sum(0)))
    inp = fold_inputs(data, np.zeros((0, 2), int), cfg)
    pos, unknown = np.argwhere(data.A == 1), np.argwhere(data.A == 0)
    pool = unknown[unknown[:, 1] != j]
    neg = pool[rng.choice(len(pool), min(len(pool) - 1, int(round(cfg.negatives * len(pos)))), replace=False)]
    pairs_in = cnn_inputs(cfg, inp, cfg.seed + 1000)
    model, result.histories[("all", cfg.seed + 1000)], _ = _fit_cnn(
        cfg, pairs_in, pos, neg, device, RunDir("all", exp.path), cfg.seed + 1000
    )
    result.final = (model.cpu().eval(), pairs_in, neg)
    result.disease = data.diseases[j]
    result.top = result.top_candidates(result.disease)
    n = min(600, len(pos))
    sample_pos = pos[rng.choice(len(pos), n, replace=False)]
    sample_unk = unknown[rng.choice(len(unknown), n, replace=False)]
    top_pairs = np.array([(data.mirnas.index(t["mirna"]), j) for t in result.top]).reshape(-1, 2)
    pairs = np.concatenate([sample_pos, sample_unk, top_pairs])
    kind = ["known"] * n + ["unknown"] * n + ["top predicted"] * len(top_pairs)
    with torch.no_grad():
        feats = torch.cat([model.features(pairs_in.pairs(pairs[s : s + 2048])) for s in range(0, len(pairs), 2048)])
        score = torch.softmax(model.head(feats), 1)[
            :, 1
        ]  # the head on the embeddings just made, not a second forward pass
    result.embedding = {
        "features": feats.numpy(),
        "kind": kind,
        "names": [f"{data.mirnas[i]} – {data.diseases[d]}" for i, d in pairs],
        "score": score.numpy(),
    }


__all__ = [
    "CnnmdaConfig",
    "CnnmdaResult",
    "run_cnnmda",
    "fold_positives",
    "fold_inputs",
    "fold_pairs",
    "choose_nmf_rank",
    "popularity_scores",
    "corrected_interval",
    "load_data",
    "METHODS",
    "NMF_RANKS",
]
