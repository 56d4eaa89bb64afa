"""What the reliability machinery costs and saves, measured side by side in one run.

Prints one JSON line:
- the time of one engine training step (resnet20, batch 128, CE) and of writing + reading back
  the full resumable checkpoint fit saves after every epoch (weights, SGD state, schedule, every
  random generator's state; atomic write; weights_only load onto the CPU), and their ratio — the
  checkpoint's cost in training steps;
- the size of one executed notebook's HTML exported as nbconvert does by default (plotly.js and
  the widget state inside) and as ``geoviz.batch.export_html`` does (one shared plotly.min.js),
  and their ratio.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import bench_parser, synchronizer


def _median_seconds(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def checkpoint_vs_step(device: torch.device, reps: int) -> dict:
    from geoviz.engine import TrainStep, make_optimizer, make_schedule, rng_state, set_rng_state
    from geoviz.losses.terms import build_term
    from geoviz.models import build_model
    from geoviz.runs import RunDir

    torch.manual_seed(0)
    model = build_model("resnet20", 10).to(device)
    terms = [build_term("ce")]
    opt = make_optimizer(model.parameters(), "sgd", 0.1, 0.9, 5e-4)
    sched = make_schedule(opt, "cosine", 10, 100)
    batch = (torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,)))
    sync = synchronizer(device)
    with tempfile.TemporaryDirectory() as tmp, TrainStep(model, model, terms, opt, sched, device=device) as step:
        run = RunDir("bench", tmp)
        step(batch)  # warm-up, and optimiser state exists

        def one_step():
            step(batch)
            sync()

        def save_and_load():
            run.save_checkpoint(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "epoch": 1,
                    "rng": rng_state(),
                }
            )
            ck = run.load_checkpoint(map_location="cpu")
            set_rng_state(ck["rng"])

        t_step = _median_seconds(one_step, reps)
        t_ck = _median_seconds(save_and_load, reps)
        size = run.checkpoint_path().stat().st_size
    return {
        "train_step_ms": round(1e3 * t_step, 2),
        "checkpoint_save_load_ms": round(1e3 * t_ck, 2),
        "checkpoint_in_train_steps": round(t_ck / t_step, 3),
        "checkpoint_mib": round(size / 2**20, 2),
    }


def html_sizes(notebook: str) -> dict:
    import nbformat
    from nbconvert import HTMLExporter

    from geoviz.batch import export_html, find_notebook, run_notebook

    before = os.environ.get("GEOVIZ_RUNS")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GEOVIZ_RUNS"] = str(Path(tmp) / "runs")  # the notebook's run goes away with the temp folder
        try:
            out = run_notebook(find_notebook(notebook), Path(tmp) / "nb", profile="smoke", html=False)
        finally:
            if before is None:
                del os.environ["GEOVIZ_RUNS"]
            else:
                os.environ["GEOVIZ_RUNS"] = before
        plain, _ = HTMLExporter().from_notebook_node(nbformat.read(str(out), as_version=4))
        offline = export_html(out).stat().st_size
        shared = (out.parent / "plotly.min.js").stat().st_size
    plain_bytes = len(plain.encode("utf-8"))
    return {
        "notebook": notebook,
        "html_default_bytes": plain_bytes,
        "html_offline_bytes": offline,
        "shared_plotly_js_bytes": shared,
        "html_size_ratio_default_over_offline": round(plain_bytes / offline, 1),
    }


def main() -> None:
    ap = bench_parser(__doc__, rounds=15)
    ap.add_argument("--notebook", default="quickstart")
    ap.add_argument("--skip-html", action="store_true", help="no notebook run (e.g. where jupyter is not installed)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    os.environ.setdefault("GEOVIZ_PROGRESS", "0")
    out = {
        "benchmark": "reliability",
        "device": dev.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.machine(),
        **checkpoint_vs_step(dev, args.rounds),
    }
    if not args.skip_html:
        out.update(html_sizes(args.notebook))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
