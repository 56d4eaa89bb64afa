"""Running a trained model over a data set: logits, accuracy, reconstruction error.

It sits below both ``analysis`` (the angle tracker predicts every epoch) and ``engine`` (which
evaluates for model selection), so neither has to import the other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ._utils import eval_mode, resolve_device
from .datasets._batched import BatchSource, batch_source

__all__ = [
    "AMP_MODES",
    "amp_dtype",
    "unwrap",
    "as_loader",
    "DeviceLoader",
    "predict",
    "evaluate",
    "evaluate_reconstruction",
    "evaluate_regression",
    "recalibrate_batchnorm",
]

AMP_MODES = ("auto", "off", "bf16", "fp16")


def amp_dtype(amp: str | bool | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None: full precision).

    ``"auto"``: bf16 on a CUDA device that supports it, full precision elsewhere (the CPU gains
    nothing from it). ``"fp16"`` needs loss scaling, which ``fit`` adds (a ``GradScaler``).
    """
    if amp in (False, "off", None):
        return None
    if amp in ("auto", True):
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    raise ValueError(f"unknown amp {amp!r}; allowed: {', '.join(map(repr, AMP_MODES))}")


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class DeviceLoader(DataLoader):
    """A DataLoader over a tensor-backed data set (``geoviz.datasets.batch_source``) whose tensors
    were moved to ``device`` once: each batch is gathered there by index, converted and augmented
    as a batch. Its batches are the per-item loader's, index for index and value for value (the
    augmentation's random draws aside): the same sampler, and the same draw from the generator at
    the start of each pass, so a run takes the same random path through either loader."""

    def __init__(self, data: Dataset, source: BatchSource, device: torch.device, **kwargs):
        super().__init__(data, **kwargs)
        self.source, self.device = source, device
        images, targets, rows = source.images, source.targets, source.rows
        if rows is not None and device.type != "cpu":  # only the rows a Subset uses travel to the device
            images, targets, rows = images[rows], targets[rows], None
        self._images, self._targets = images.to(device), targets.to(device)
        self._rows = None if rows is None else rows.to(device)

    def __iter__(self):
        # the base-seed draw every DataLoader iterator makes when it is created (not at its first
        # batch: tqdm.auto creates one iterator it never reads), from the global generator when it has none
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        return self._batches()

    def _batches(self):
        src, dev = self.source, self.device
        for idx in self.batch_sampler:
            i = torch.as_tensor(idx, dtype=torch.long)
            di = i.to(dev, non_blocking=True)
            rows = di if self._rows is None else self._rows[di]
            x = self._images[rows].float() / 255.0
            if src.transform is not None:
                x = src.transform(x)
            y = self._targets[rows]
            yield (x, y) if src.ids is None else (x, y, src.ids[i])


DEVICE_DATA_SHARE = 0.25  # the most of a GPU's free memory a data set may take before it is read item by item


def _fits_on(source: BatchSource, device: torch.device) -> bool:
    """Whether the rows a loader reads fit in a share of the device's free memory (the CPU: always,
    its tensors are not copied); otherwise the per-item DataLoader, with a warning."""
    if device.type != "cuda":
        return True
    n = len(source) * source.images[0].numel() * source.images.element_size()
    free = torch.cuda.mem_get_info(device)[0]
    if n <= DEVICE_DATA_SHARE * free:
        return True
    import warnings

    warnings.warn(
        f"the data set's {n / 2**20:.0f} MiB of images would take more than {DEVICE_DATA_SHARE:.0%} of the GPU's free "
        f"{free / 2**20:.0f} MiB: reading it item by item instead",
        stacklevel=3,
    )
    return False


def as_loader(
    data,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    sampler=None,
    pin_memory: bool = False,
    device: torch.device | str | None = None,
    batch_sampler=None,
) -> DataLoader | None:
    """A DataLoader over ``data`` (a Dataset), ``data`` itself when it is one already, None for None.

    With ``device``, a tensor-backed data set (shapes, digits, CIFAR-10, MNIST, defects, probe tasks,
    or a Subset of one) gets a ``DeviceLoader``: its tensors go to the device once and batches are
    gathered there, instead of a Python call and a collate per image (``num_workers`` and
    ``pin_memory`` then have nothing to do). ``batch_sampler`` gives the batches as index lists."""
    if data is None or isinstance(data, DataLoader):
        return data
    if not isinstance(data, Dataset):
        raise TypeError(f"expected a torch Dataset or DataLoader, got {type(data).__name__}")
    g = torch.Generator().manual_seed(seed) if shuffle and sampler is None else None
    kwargs = dict(
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        generator=g,
        sampler=sampler,
        drop_last=drop_last and len(data) > batch_size,
    )
    if batch_sampler is not None:  # the batches themselves (lists of indices)
        kwargs = dict(batch_sampler=batch_sampler)
    source = batch_source(data) if device is not None else None
    if source is not None and _fits_on(source, torch.device(device)):
        return DeviceLoader(data, source, torch.device(device), **kwargs)
    return DataLoader(data, num_workers=num_workers, pin_memory=pin_memory, **kwargs)
    # no persistent_workers: persistent workers draw their base seed once, so a resumed run's first
    # epoch would see other worker random streams than the uninterrupted run's


@torch.no_grad()
def predict(
    model: nn.Module, data, *, device: str | torch.device = "auto", batch_size: int = 256, amp="auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, on the CPU) and labels of a whole data set; the model runs in eval mode and
    gets its own mode back afterwards."""
    dev = resolve_device(device)
    model = unwrap(model)
    dtype = amp_dtype(amp, dev)
    logits, labels = [], []
    with eval_mode(model):
        for batch in as_loader(data, batch_size, device=dev):
            x, y = batch[0], batch[1]
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                out = model(x.to(dev, non_blocking=True))
            logits.append(out.float().cpu())
            labels.append(torch.as_tensor(y).cpu())
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: nn.Module, data, *, device: str | torch.device = "auto", batch_size: int = 256) -> dict:
    """``{"loss": mean cross-entropy, "acc": top-1 accuracy}`` on a data set."""
    logits, labels = predict(model, data, device=device, batch_size=batch_size)
    return {"loss": F.cross_entropy(logits, labels).item(), "acc": (logits.argmax(1) == labels).float().mean().item()}


def evaluate_regression(model: nn.Module, data, *, device: str | torch.device = "auto", batch_size: int = 256) -> dict:
    """``{"loss": mean squared error, "mae": mean absolute error}`` of a one-output regressor
    (its first output is the prediction), in full precision: bf16 would round a prediction of
    10 to 0.03–0.06."""
    out, y = predict(model, data, device=device, batch_size=batch_size, amp="off")
    pred = out.reshape(len(y), -1)[:, 0]
    y = y.float()
    return {"loss": F.mse_loss(pred, y).item(), "mae": (pred - y).abs().mean().item()}


@torch.no_grad()
def evaluate_reconstruction(
    model: nn.Module, data, *, device: str | torch.device = "auto", batch_size: int = 256
) -> dict:
    """``{"loss": mean squared error per pixel}`` of an autoencoder (model(x) reconstructs x)."""
    dev = resolve_device(device)
    model = unwrap(model)
    tot, n = 0.0, 0
    with eval_mode(model):
        for batch in as_loader(data, batch_size, device=dev):
            x = batch[0].to(dev)
            tot += F.mse_loss(model(x).float(), x.float(), reduction="sum").item()
            n += x.numel()
    return {"loss": tot / max(1, n)}


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, data, *, batch_size: int = 128, device: str | torch.device = "auto") -> int:
    """Set every BatchNorm's running mean and variance to the statistics of ``data``: one pass, each
    batch weighted by its number of images (a last, smaller batch counts for what it holds), the
    rest of the model in eval mode (dropout off; no weight changes). A randomly initialised network
    keeps BatchNorm's starting statistics (mean 0, variance 1), so its deep layers see no
    normalisation at all; recalibrated, it is the strong random-features baseline. Every module gets
    its own mode back. Returns the number of BatchNorm layers recalibrated (0: nothing to do)."""
    net = unwrap(model)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    dev = resolve_device(device)
    modes = {m: m.training for m in net.modules()}
    momenta = {m: m.momentum for m in norms}
    try:
        net.eval()
        for m in norms:
            m.reset_running_stats()
            m.train()
        seen = 0
        for batch in as_loader(data, batch_size, device=dev):
            x = batch[0].to(dev)
            for m in norms:  # running = (1 - w) · running + w · batch, w = this batch's share of the images so far
                m.momentum = len(x) / (seen + len(x))
            model(x)
            seen += len(x)
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, training in modes.items():
            m.training = training
    return len(norms)
