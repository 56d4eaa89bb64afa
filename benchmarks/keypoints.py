"""Throughput of the keypoint code vs convolutional sparse coding at matched sparsity.

Prints one JSON line: encode + decode throughput (images/s) of the AF4 keypoint autoencoder at
batch 256 on 28×28 digits (briefly trained, default sparsity), its mean keypoints per image, the
same for the sparse-coding baseline (OMP at the matched number of non-zeros, code + reconstruct),
and the ratios. Timings are medians of interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from geoviz.datasets import get_dataset
from geoviz.engine import fit
from geoviz.methods.keypoints import ConvSparseCoder, SparseKeypointAE


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--train-epochs", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    train = get_dataset("digits", "train")
    xtr = torch.stack([train[i][0] for i in range(len(train))])
    test = get_dataset("digits", "test")
    x = torch.stack([test[i % len(test)][0] for i in range(args.batch)])
    ae = SparseKeypointAE("AF4")
    fit(
        ae,
        train,
        objective="reconstruction",
        epochs=args.train_epochs,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0,
        batch_size=64,
        progress=False,
        device="cpu",
    )
    ae.eval()
    kp_per_image = float(ae.encode(x).counts().float().mean())
    matched = max(1, round(kp_per_image))
    coder = ConvSparseCoder(n_nonzero=matched).fit(xtr, epochs=1)

    def ae_pass():
        with torch.no_grad():
            ae.decode(ae.encode(x))

    def sc_pass():
        coder.reconstruct(coder.code(x))

    ae_pass(), sc_pass()
    t_ae, t_sc = [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        ae_pass()
        t_ae.append(time.perf_counter() - t)
        t = time.perf_counter()
        sc_pass()
        t_sc.append(time.perf_counter() - t)
    a, s = statistics.median(t_ae), statistics.median(t_sc)
    sc_nz = float((coder.code(x) != 0).flatten(1).sum(1).float().mean())
    print(
        json.dumps(
            {
                "benchmark": "keypoints",
                "device": "cpu",
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "batch": args.batch,
                "image": "28x28 digits",
                "keypoint_ae": "AF4",
                "keypoint_encode_decode_images_per_s": round(args.batch / a, 1),
                "keypoints_per_image": round(kp_per_image, 2),
                "sparse_coding": f"OMP, {matched} non-zeros",
                "sparse_coding_code_reconstruct_images_per_s": round(args.batch / s, 1),
                "sparse_coding_nonzeros_per_image": round(sc_nz, 2),
                "throughput_ratio_keypoints_over_sparse_coding": round(s / a, 2),
                "nonzeros_ratio_keypoints_over_sparse_coding": round(kp_per_image / sc_nz, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
