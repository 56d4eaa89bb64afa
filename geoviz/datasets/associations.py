"""miRNA–disease associations (paper 7, CNNMDA): real HMDD-derived files, or a synthetic set with a
planted low-rank truth.

An ``AssociationData`` holds the entity names, the known associations as a binary matrix
``A`` (miRNAs × diseases) and the two similarity matrices ``SM`` (miRNA functional similarity,
miRNAs × miRNAs) and ``SD`` (disease semantic similarity, diseases × diseases), symmetric, in
[0, 1]. A synthetic set also carries ``truth``: every planted association, of which ``A`` shows
only a part (the rest is the held-out truth a method should recover).

Real data: ``data/mda/`` (see ``data/README.md``), as HMDD v2.0-derived sets are distributed:
``mirna_names``, ``disease_names`` (one name per line), ``associations`` (two columns per line:
miRNA and disease, by name or by 1-based index), ``mirna_similarity`` and ``disease_similarity``
(square matrices, whitespace-, tab- or comma-separated), each ``.txt``, ``.csv`` or ``.tsv``.
Every file is checked; a bad one fails with what is wrong in it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..paths import data_root

FILES = ("mirna_names", "disease_names", "associations", "mirna_similarity", "disease_similarity")
SUFFIXES = (".txt", ".csv", ".tsv")


@dataclass
class AssociationData:
    mirnas: list[str]
    diseases: list[str]
    A: np.ndarray  # (n_mirna, n_disease) 0/1 known associations
    SM: np.ndarray  # (n_mirna, n_mirna) miRNA functional similarity
    SD: np.ndarray  # (n_disease, n_disease) disease semantic similarity
    truth: np.ndarray | None = None  # synthetic only: every planted association (A ⊆ truth)
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.A.shape

    def held_out(self) -> np.ndarray:
        """Synthetic only: the planted associations ``A`` does not show, (k, 2) index pairs."""
        if self.truth is None:
            raise ValueError("only a synthetic set has a planted truth; real data have none")
        return np.argwhere((self.truth == 1) & (self.A == 0))

    def __repr__(self):
        kind = "synthetic" if self.truth is not None else "files"
        return (
            f"AssociationData({kind}: {len(self.mirnas)} miRNAs × {len(self.diseases)} diseases, "
            f"{int(self.A.sum())} associations)"
        )


def make_synthetic_mda(
    n_mirna: int = 495,
    n_disease: int = 383,
    n_assoc: int = 5430,
    *,
    rank: int = 8,
    hidden: float = 0.2,
    noise: float = 0.5,
    similarity_noise: float = 0.05,
    seed: int = 0,
) -> AssociationData:
    """A set with planted low-rank structure, at HMDD v2.0's sizes by default.

    Non-negative factors ``U`` (miRNAs × rank) and ``V`` (diseases × rank), sparse Gamma draws, give
    an affinity ``U Vᵀ``; the planted truth is the ``n_assoc / (1 − hidden)`` pairs of highest
    ``log affinity + noise · Gumbel`` (``noise`` 0: exactly the top pairs), and ``A`` shows a random
    ``1 − hidden`` of them (``n_assoc``). The similarities come from the same factors, not from
    ``A``: the cosine similarity of the factor rows (in [0, 1], as the factors are non-negative)
    plus symmetric noise of sd ``similarity_noise``, clipped to [0, 1], diagonal 1.
    """
    if not 0 <= hidden < 1:
        raise ValueError(f"hidden must be in [0, 1), got {hidden}")
    n_truth = int(round(n_assoc / (1 - hidden)))
    if not 0 < n_truth < n_mirna * n_disease:
        raise ValueError(f"{n_assoc} associations with {hidden:.0%} hidden do not fit {n_mirna} × {n_disease} pairs")
    rng = np.random.default_rng(seed)
    U = rng.gamma(0.4, 1.0, (n_mirna, rank)) * (rng.random((n_mirna, rank)) < 0.5)
    V = rng.gamma(0.4, 1.0, (n_disease, rank)) * (rng.random((n_disease, rank)) < 0.5)
    U[np.arange(n_mirna), rng.integers(0, rank, n_mirna)] += 0.5  # every entity has some factor
    V[np.arange(n_disease), rng.integers(0, rank, n_disease)] += 0.5
    score = np.log(U @ V.T + 1e-9) + noise * rng.gumbel(size=(n_mirna, n_disease))
    truth = np.zeros((n_mirna, n_disease), np.int8)
    truth.flat[np.argpartition(score.ravel(), -n_truth)[-n_truth:]] = 1
    pos = np.flatnonzero(truth.ravel())
    A = np.zeros_like(truth)
    A.flat[rng.choice(pos, n_assoc, replace=False)] = 1
    return AssociationData(
        [f"miR-{i + 1}" for i in range(n_mirna)],
        [f"disease-{j + 1}" for j in range(n_disease)],
        A,
        _factor_similarity(U, similarity_noise, rng),
        _factor_similarity(V, similarity_noise, rng),
        truth,
        {"rank": rank, "hidden": hidden, "noise": noise, "similarity_noise": similarity_noise, "seed": seed},
    )


def _factor_similarity(F: np.ndarray, noise: float, rng) -> np.ndarray:
    unit = F / np.linalg.norm(F, axis=1, keepdims=True)
    S = unit @ unit.T
    E = rng.normal(0, noise, S.shape)
    S = np.clip(S + (E + E.T) / np.sqrt(2), 0, 1)
    np.fill_diagonal(S, 1.0)
    return S


def load_mda(root: str | Path | None = None) -> AssociationData:
    """The five files of ``root`` (default ``data/mda``), checked (see the module's docstring)."""
    root = Path(root) if root is not None else data_root() / "mda"
    paths = {}
    for stem in FILES:
        found = [root / f"{stem}{s}" for s in SUFFIXES if (root / f"{stem}{s}").is_file()]
        if not found:
            raise FileNotFoundError(
                f"{root / stem}.txt (or .csv / .tsv) is missing: data/mda/ needs {', '.join(FILES)} "
                f"(see data/README.md), or use the synthetic set (make_synthetic_mda)"
            )
        paths[stem] = found[0]
    mirnas, diseases = _names(paths["mirna_names"]), _names(paths["disease_names"])
    SM = _similarity(paths["mirna_similarity"], len(mirnas), "miRNAs")
    SD = _similarity(paths["disease_similarity"], len(diseases), "diseases")
    A = _associations(paths["associations"], mirnas, diseases)
    return AssociationData(mirnas, diseases, A, SM, SD, meta={"root": str(root)})


def _rows(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    return [
        [c.strip().strip('"') for c in re.split(r"[\t,]" if re.search(r"[\t,]", ln) else r"\s+", ln.strip())]
        for ln in lines
        if ln.strip()
    ]


def _names(path: Path) -> list[str]:
    names = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    if not names:
        raise ValueError(f"{path} holds no names: one name per line")
    seen, dup = set(), []
    for n in names:
        (dup.append(n) if n in seen else seen.add(n))
    if dup:
        raise ValueError(f"{path}: names must be unique; repeated: {sorted(set(dup))[:10]}")
    return names


def _similarity(path: Path, n: int, what: str) -> np.ndarray:
    rows = _rows(path)
    lengths = sorted({len(r) for r in rows})
    if lengths != [len(rows)]:
        raise ValueError(f"{path}: a similarity matrix must be square; it has {len(rows)} rows of {lengths} values")
    try:
        S = np.array([[float(c) for c in r] for r in rows])
    except ValueError as e:
        raise ValueError(f"{path}: a similarity matrix holds numbers only ({e})") from None
    if len(S) != n:
        raise ValueError(f"{path}: {len(S)} × {len(S)}, but the names file lists {n} {what}")
    if not np.isfinite(S).all() or S.min() < 0 or S.max() > 1:
        raise ValueError(
            f"{path}: similarities must lie in [0, 1]; found values from {np.nanmin(S):.4g} to {np.nanmax(S):.4g}"
        )
    asym = np.abs(S - S.T).max()
    if asym > 1e-6:
        i, j = np.unravel_index(np.argmax(np.abs(S - S.T)), S.shape)
        raise ValueError(
            f"{path}: a similarity matrix must be symmetric; entry ({i + 1}, "
            f"{j + 1}) is {S[i, j]:.4g} but ({j + 1}, {i + 1}) is {S[j, i]:.4g}"
        )
    return S


def _pair_lines(path: Path) -> list[list[str]]:
    """Two fields per line: split on tabs where the line has one, else as CSV (quoted names may
    hold commas, as MeSH disease names do), else on whitespace."""
    import csv

    out = []
    for ln in path.read_text(encoding="utf-8-sig").splitlines():
        if not ln.strip():
            continue
        if "\t" in ln:
            fields = ln.split("\t")
        elif "," in ln:
            fields = next(csv.reader([ln]))
        else:
            fields = ln.split()
        out.append([f.strip().strip('"') for f in fields if f.strip()])
    return out


def _associations(path: Path, mirnas: list[str], diseases: list[str]) -> np.ndarray:
    rows = _pair_lines(path)
    bad_shape = [k + 1 for k, r in enumerate(rows) if len(r) != 2]
    if bad_shape:
        raise ValueError(
            f"{path}: every line holds a miRNA and a disease (tab- or "
            f"comma-separated; quote names with commas); lines {bad_shape[:10]} do not"
        )
    mi, di = {n: k for k, n in enumerate(mirnas)}, {n: k for k, n in enumerate(diseases)}

    def resolve(r):
        if r[0].isdigit() and r[1].isdigit():  # 1-based indices into the names files
            a, b = int(r[0]) - 1, int(r[1]) - 1
            return (a, b) if 0 <= a < len(mirnas) and 0 <= b < len(diseases) else None
        return (mi[r[0]], di[r[1]]) if r[0] in mi and r[1] in di else None

    pairs = [resolve(r) for r in rows]
    if (
        pairs
        and pairs[0] is None
        and not (rows[0][0].isdigit() and rows[0][1].isdigit())
        and all(p is not None for p in pairs[1:])
    ):
        rows, pairs = rows[1:], pairs[1:]  # a header line ("miRNA, disease")
    unknown = [", ".join(r) for r, p in zip(rows, pairs) if p is None]
    if unknown:
        zero = any(r[0] == "0" or r[1] == "0" for r in rows)
        raise ValueError(
            f"{path} names entities the names files do not list ({len(unknown)} lines): {unknown[:10]}"
            + ("; indices are 1-based" if zero else "")
        )
    A = np.zeros((len(mirnas), len(diseases)), np.int8)
    for a, b in pairs:
        A[a, b] = 1
    if not A.any():
        raise ValueError(f"{path} holds no associations")
    return A


__all__ = ["AssociationData", "make_synthetic_mda", "load_mda", "FILES"]
