"""Small data files in the real distributed formats, written by the tests (nothing is downloaded)."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def write_cifar(root: Path, per_batch: int = 20, n_test: int = 10, seed: int = 0):
    """Small CIFAR-10 files in the official python format: Python-2 pickles (protocol 2) of dicts
    with str keys, uint8 rows of 3072 values (R, G, B planes of 32×32), integer labels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in np.arange(n) % 10]
        with open(folder / name, "wb") as fh:
            pickle.dump(
                {"data": data, "labels": labels, "batch_label": name, "filenames": [f"{i}.png" for i in range(n)]},
                fh,
                protocol=2,
            )
        written[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump(
            {
                "label_names": [
                    "airplane",
                    "automobile",
                    "bird",
                    "cat",
                    "deer",
                    "dog",
                    "frog",
                    "horse",
                    "ship",
                    "truck",
                ],
                "num_vis": 3072,
                "num_cases_per_batch": per_batch,
            },
            fh,
            protocol=2,
        )
    return written


def write_idx(path, array, magic):
    with gzip.open(path, "wb") as fh:
        fh.write(
            struct.pack(">I", magic)
            + b"".join(struct.pack(">I", d) for d in array.shape)
            + array.astype(np.uint8).tobytes()
        )


def write_hub_resnet18(seed: int):
    """A randomly initialised torchvision resnet18 saved where torchvision keeps its DEFAULT weights
    in the torch hub cache ($TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth): what
    ``weights="DEFAULT"`` reads without a download. Returns the model (eval mode)."""
    import torch
    import torchvision

    from geoviz.models import hub_weights_file

    torch.manual_seed(seed)
    ref = torchvision.models.resnet18().eval()
    path, _ = hub_weights_file("resnet18", "DEFAULT")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ref.state_dict(), path)
    return ref
