"""``geoviz``: the experiments headless, and batch runs of the notebooks (papermill).

    geoviz models | datasets            list what the registries hold
    geoviz train --config FILE.yaml     one training run from a config (also under torchrun)
    geoviz quickstart [--profile P]     the quickstart experiment without a notebook
    geoviz atlas A B --data D --out F   layer × layer CKA of two networks (names or .pt checkpoints) as one HTML report
    geoviz notebook NAME [-p key value] run one notebook into runs/notebooks/ (+ HTML)
    geoviz demo [--profile P]           run every notebook headless into runs/notebooks/ with HTML
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .batch import NoNotebooks, find_notebook, list_notebooks, no_notebooks_message, run_notebook
from .paths import runs_root


def _parse_value(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="geoviz", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("models", help="list the model registry")
    sub.add_parser("datasets", help="list the data sets")
    tr = sub.add_parser("train", help="one training run from a YAML config (works under torchrun)")
    tr.add_argument("--config", required=True)
    tr.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"), help="override a config key")
    q = sub.add_parser("quickstart", help="run the quickstart experiment headless")
    q.add_argument("--profile", choices=("smoke", "quick", "full"), default=None)
    q.add_argument("--seed", type=int, default=0)
    at = sub.add_parser("atlas", help="compare every layer of network A with every layer of network B: an HTML report")
    at.add_argument("a", help="network A: a checkpoint (.pt, from geoviz.models.save_model) or a model name (untrained)")
    at.add_argument("b", help="network B, as A")
    at.add_argument("--data", default="shapes10", help="data set name (geoviz datasets); its test split is used")
    at.add_argument("--n-images", type=int, default=2000)
    at.add_argument("--layers-a", nargs="+", default=["auto"], help="module paths or globs (default: the blocks)")
    at.add_argument("--layers-b", nargs="+", default=["auto"])
    at.add_argument("--embedding", choices=("umap", "pca", "none"), default="umap")
    at.add_argument("--batch-size", type=int, default=128)
    at.add_argument("--device", default="auto")
    at.add_argument("--seed", type=int, default=0)
    at.add_argument("--floor", action="store_true", help="also compare A with B untrained (B's architecture, fresh weights): the baseline")
    at.add_argument("--out", default="atlas.html")
    nb = sub.add_parser("notebook", help="run one notebook with papermill")
    nb.add_argument("name", help="notebook file, or its name without number (quickstart)")
    nb.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    nb.add_argument("--profile", choices=("smoke", "quick", "full"), default=None)
    nb.add_argument("--out", default=None, help="output folder (default: <runs root>/notebooks)")
    nb.add_argument("--no-html", action="store_true")
    d = sub.add_parser("demo", help="run every notebook headless (papermill) and export HTML")
    d.add_argument("--profile", choices=("smoke", "quick", "full"), default="quick")
    d.add_argument("--out", default=None, help="output folder (default: <runs root>/notebooks)")
    args = ap.parse_args(argv)

    if args.cmd == "models":
        from .models import list_models

        print("\n".join(list_models()))
        print("tv:<name> for any torchvision model, e.g. tv:resnet18 (weights only from local files)")
    elif args.cmd == "datasets":
        from .datasets import list_datasets

        print("\n".join(list_datasets()))
    elif args.cmd == "train":
        from .experiments.train import load_config, prepare_train, run_train

        from .capture import MemoryBudgetError

        try:  # a bad config (or missing data, an unknown layer, ...) is a message, not a traceback
            cfg = load_config(args.config, **{k: _parse_value(v) for k, v in args.set})
            prepared = prepare_train(cfg)
        except (KeyError, TypeError, ValueError, FileNotFoundError, MemoryBudgetError) as err:
            raise SystemExit(f"geoviz train: {err.args[0] if err.args else err}") from None
        res = run_train(prepared)
        if res.run is not None:
            print(json.dumps(res.run.read_metrics()["summary"], indent=1))
    elif args.cmd == "quickstart":
        from .experiments.quickstart import QuickstartConfig, run_quickstart

        res = run_quickstart(QuickstartConfig.from_profile(args.profile, seed=args.seed))
        print(json.dumps(res.save_metrics(), indent=1))
    elif args.cmd == "atlas":
        from .atlas import compare
        from .capture import MemoryBudgetError
        from .datasets import get_dataset
        from .experiments.atlas import load_network, untrained_like
        from .viz.atlas import write_atlas_report

        try:
            if args.n_images < 4:
                raise ValueError(f"--n-images must be at least 4, got {args.n_images}")
            data = get_dataset(args.data, "test", n=args.n_images, seed=args.seed)
            (a, trained_a), (b, trained_b) = load_network(args.a, data, args.seed), load_network(args.b, data, args.seed + 1)
            layers = lambda v: "auto" if v == ["auto"] else v  # noqa: E731
            kw = dict(batch_size=args.batch_size, device=args.device, embedding=None if args.embedding == "none" else args.embedding, seed=args.seed)
            atlas = compare(a, b, data, layers(args.layers_a), layers(args.layers_b), **kw)
            floor = compare(a, untrained_like(b, args.seed + 1), data, layers(args.layers_a), layers(args.layers_b), **kw) if args.floor else None
        except (KeyError, TypeError, ValueError, FileNotFoundError, MemoryBudgetError) as err:
            raise SystemExit(f"geoviz atlas: {err.args[0] if err.args else err}") from None
        untrained = [s for s, t in ((args.a, trained_a), (args.b, trained_b)) if not t]
        title = f"Geometry atlas: {args.a} vs {args.b} on {args.data}" + (f" ({', '.join(untrained)} untrained)" if untrained else "")
        print(write_atlas_report(atlas, args.out, floor=floor, title=title))
        print(json.dumps({"best_match": atlas.best_match(), "seconds": atlas.seconds}))
    elif args.cmd == "notebook":
        params = {k: _parse_value(v) for k, v in args.parameter}
        out_dir = Path(args.out) if args.out else runs_root() / "notebooks"
        out = run_notebook(find_notebook(args.name), out_dir, params, profile=args.profile, html=not args.no_html)
        print(out)
    elif args.cmd == "demo":
        nbs = list_notebooks()
        if not nbs:
            raise NoNotebooks(no_notebooks_message())
        out_dir = Path(args.out) if args.out else runs_root() / "notebooks"
        for path in nbs:
            print(f"running {path.name} (profile {args.profile}) ...", flush=True)
            out = run_notebook(path, out_dir, profile=args.profile)
            print(f"  → {out} and {out.with_suffix('.html')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
