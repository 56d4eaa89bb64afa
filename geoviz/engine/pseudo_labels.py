"""Offline distillation (Greco et al., paper 4): a teacher labels an unlabelled pool once, the
labels are stored with the run, a student regresses them (MSE) and is then fine-tuned on the
labelled set.

``pseudo_label`` writes the teacher's outputs in chunks (each chunk atomically), so an interrupted
labelling resumes at the first missing chunk; the finished array is written atomically beside a
record of the teacher and the pool it came from, and a rerun with another teacher or pool is
refused rather than mixed. ``distill_offline`` chains the labelling and two ``fit`` runs (each
resumable as any run).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch.utils.data import Dataset

from .._io import atomic_save_npy, atomic_write_json, read_json
from .._utils import progress_bar
from ..inference import as_loader, unwrap
from ..runs import RunDir
from .loop import fit


def _fingerprint(model: torch.nn.Module, pool, chunk: int) -> dict:
    """The teacher (class, build arguments, weights), every pool image and the chunk size the parts
    were written with: the same weights in another wrapper (e.g. another input size) label otherwise."""
    net = unwrap(model)
    h = hashlib.sha256(f"{type(net).__qualname__}:{sorted(getattr(net, 'build_args', {}).items())!r}".encode())
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    p = hashlib.sha256()
    for b in as_loader(pool, 1024):
        p.update(b[0].detach().cpu().contiguous().numpy().tobytes())
    return {"teacher": h.hexdigest()[:16], "pool": p.hexdigest()[:16], "pool_size": len(pool), "chunk": int(chunk)}


@torch.no_grad()
def pseudo_label(
    teacher: torch.nn.Module,
    pool,
    run: RunDir,
    *,
    chunk: int = 1024,
    batch_size: int = 256,
    device="cpu",
    progress: bool = True,
) -> np.ndarray:
    """The teacher's first output for every pool image (``pool[i][0]``), float32 (N,), stored as
    ``<run>/pseudo_labels.npy``; resumes from ``<run>/pseudo_labels/part-*.npy`` when interrupted."""
    import shutil

    final, meta_path, parts = (
        run.path / "pseudo_labels.npy",
        run.path / "pseudo_labels.json",
        run.path / "pseudo_labels",
    )
    meta = _fingerprint(teacher, pool, chunk)
    if meta_path.is_file() and read_json(meta_path) != meta:
        raise ValueError(
            f"{run.path} holds pseudo-labels of another teacher, pool or chunk size "
            f"({read_json(meta_path)} vs {meta}); use a new run name, or delete "
            f"{meta_path.name}, {final.name} and the folder {parts.name}/ to label again"
        )
    if not meta_path.is_file():  # parts without a record are nobody's: start clean
        shutil.rmtree(parts, ignore_errors=True)
        final.unlink(missing_ok=True)
        atomic_write_json(meta_path, meta)  # once: a finished labelling is read, never touched
    if final.is_file():
        labels = np.load(final)
        if len(labels) != len(pool):
            raise ValueError(f"{final} has {len(labels)} labels for a pool of {len(pool)}: delete it to label again")
        return labels
    parts.mkdir(exist_ok=True)
    net = unwrap(teacher).to(device).eval()
    n = len(pool)
    starts = list(range(0, n, chunk))
    for s in progress_bar(starts, desc="pseudo-labels", enabled=progress, leave=False):
        path = parts / f"part-{s // chunk:05d}.npy"
        if path.is_file():
            continue
        sub = torch.utils.data.Subset(pool, range(s, min(n, s + chunk)))
        out = [net(b[0].to(device)).float().reshape(len(b[0]), -1)[:, 0].cpu() for b in as_loader(sub, batch_size)]
        atomic_save_npy(path, torch.cat(out).numpy().astype(np.float32))
    labels = np.concatenate([np.load(parts / f"part-{s // chunk:05d}.npy") for s in starts])
    if len(labels) != n:
        raise ValueError(
            f"the parts in {parts} hold {len(labels)} labels for a pool of {n}: delete the folder to label again"
        )
    atomic_save_npy(final, labels)
    return labels


class _Relabelled(Dataset):
    def __init__(self, pool, targets):
        self.pool, self.targets = pool, torch.as_tensor(targets, dtype=torch.float32)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.pool[i][0], self.targets[i]


def distill_offline(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    labelled,
    pool,
    val=None,
    *,
    test=None,
    run: RunDir,
    labels_run: RunDir | None = None,
    pretrain_epochs: int = 10,
    finetune_epochs: int = 5,
    lr: float = 0.05,
    finetune_lr: float = 0.01,
    batch_size: int = 64,
    device="cpu",
    seed: int = 0,
    progress: bool = True,
    **fit_kwargs,
) -> dict:
    """Pseudo-label ``pool`` with ``teacher`` (stored in ``labels_run``, default ``run``: several
    students of one teacher share one labelling), regress them with ``student`` (MSE), then
    fine-tune on ``labelled``; returns both stages' ``fit`` summaries and histories."""
    labels = pseudo_label(teacher, pool, labels_run or run, device=device, progress=progress)
    pre = fit(
        student,
        _Relabelled(pool, labels),
        val,
        test=test,
        objective="regression",
        epochs=pretrain_epochs,
        lr=lr,
        batch_size=batch_size,
        device=device,
        run=RunDir("pretrain", run.path),
        seed=seed,
        progress=progress,
        **fit_kwargs,
    )
    ft = fit(
        student,
        labelled,
        val,
        test=test,
        objective="regression",
        epochs=finetune_epochs,
        lr=finetune_lr,
        batch_size=batch_size,
        device=device,
        run=RunDir("finetune", run.path),
        seed=seed,
        progress=progress,
        **fit_kwargs,
    )
    return {
        "pseudo_labels": labels,
        "pretrain": pre.summary,
        "finetune": ft.summary,
        "history": {"pretrain": pre.history, "finetune": ft.history},
    }
