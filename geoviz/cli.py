"""``geoviz``: the experiments headless, and batch runs of the notebooks (papermill).

    geoviz models | datasets            list what the registries hold
    geoviz train --config FILE.yaml     one training run from a config (also under torchrun)
    geoviz quickstart [--profile P]     the quickstart experiment without a notebook
    geoviz atlas A B --data D --out F   layer × layer CKA of two networks (names, tv:/timm: with --weights-a/-b, .pt) as one HTML report
    geoviz explore MODEL --data folder:PATH --out F   every explorer on your network and your images, one HTML report
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


def _user_errors() -> tuple:
    """The errors bad input raises: a message, not a traceback (read when one is raised, so listing
    models does not import torch's whole stack)."""
    from .capture import MemoryBudgetError

    return (KeyError, TypeError, ValueError, FileNotFoundError, NotADirectoryError, ImportError, MemoryBudgetError)


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
    at.add_argument("a", help="network A: a checkpoint (.pt, from geoviz.models.save_model), tv:<name> / timm:<name> (with --weights-a), "
                              "or a zoo model name (untrained)")
    at.add_argument("b", help="network B, as A")
    at.add_argument("--weights-a", default=None, help="weights of a tv: / timm: network A: a name (DEFAULT) read from the cache, or a file")
    at.add_argument("--weights-b", default=None)
    at.add_argument("--data", default="shapes10", help="data set name (geoviz datasets; its test split) or folder:PATH (all its images)")
    at.add_argument("--n-images", type=int, default=2000)
    at.add_argument("--layers-a", nargs="+", default=["auto"], help="module paths or globs (default: the blocks)")
    at.add_argument("--layers-b", nargs="+", default=["auto"])
    at.add_argument("--embedding", choices=("umap", "pca", "none"), default="umap")
    at.add_argument("--batch-size", type=int, default=128)
    at.add_argument("--device", default="auto")
    at.add_argument("--seed", type=int, default=0)
    at.add_argument("--download", action="store_true", help="let torchvision / timm fetch missing weights (needs internet)")
    at.add_argument("--floor", action="store_true", help="also compare A with B untrained (B's architecture, fresh weights): the baseline")
    at.add_argument("--out", default="atlas.html")
    ex = sub.add_parser("explore", help="every explorer on your network and your images, no training: one HTML report")
    ex.add_argument("model", nargs="?", default=None, help="tv:<name>, timm:<name>, a checkpoint (.pt), a zoo name; default: the "
                                                           "quickstart network")
    ex.add_argument("--weights", default=None, help="weights name (DEFAULT, IMAGENET1K_V2) read from the torch hub / timm cache, or a file")
    ex.add_argument("--data", default=None, help="folder:PATH (one subfolder per class, or a flat folder) or a data set name; default: "
                                                 "shapes10 images written to a folder")
    ex.add_argument("--model-b", default=None, help="a second network for the atlas (as MODEL)")
    ex.add_argument("--weights-b", default=None)
    ex.add_argument("--layers", nargs="+", default=None, help="module paths or globs (default: the blocks)")
    ex.add_argument("--n-images", type=int, default=None)
    ex.add_argument("--projection", choices=("umap", "pca"), default=None)
    ex.add_argument("--size", type=int, default=None, help="input size in px (default: what the weights expect)")
    ex.add_argument("--class-geometry", choices=("auto", "head", "means"), default=None,
                    help="class angles from the head's class vectors (head), from class means of the penultimate features (means), or "
                         "whichever fits (auto)")
    ex.add_argument("--cam-images", type=int, default=None, help="images explained by Grad-CAM in the report")
    ex.add_argument("--batch-size", type=int, default=None)
    ex.add_argument("--no-random-floor", action="store_true", help="leave out the random-network floor (saves a forward pass)")
    ex.add_argument("--profile", choices=("smoke", "quick", "full"), default="quick")
    ex.add_argument("--device", default="auto")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--download", action="store_true", help="let torchvision / timm fetch missing weights (needs internet)")
    ex.add_argument("--out", default="report.html")
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
        print("folder:<path> for a folder of your own images (one subfolder per class, or a flat folder)")
    elif args.cmd == "train":
        from .experiments.train import load_config, prepare_train, run_train

        try:  # a bad config (or missing data, an unknown layer, ...) is a message, not a traceback
            cfg = load_config(args.config, **{k: _parse_value(v) for k, v in args.set})
            prepared = prepare_train(cfg)
        except _user_errors() as err:
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
        from .experiments.atlas import load_pair
        from .models import untrained_copy
        from .viz.atlas import write_atlas_report

        try:
            if args.n_images < 4:
                raise ValueError(f"--n-images must be at least 4, got {args.n_images}")
            a, trained_a, b, trained_b, data = load_pair(args.a, args.b, args.data, weights_a=args.weights_a, weights_b=args.weights_b,
                                                         n_images=args.n_images, seed=args.seed, download=args.download)
            layers = lambda v: "auto" if v == ["auto"] else v  # noqa: E731
            kw = dict(batch_size=args.batch_size, device=args.device, embedding=None if args.embedding == "none" else args.embedding, seed=args.seed)
            atlas = compare(a, b, data, layers(args.layers_a), layers(args.layers_b), **kw)
            floor = compare(a, untrained_copy(b, args.seed + 1), data, layers(args.layers_a), layers(args.layers_b), **kw) if args.floor else None
        except _user_errors() as err:
            raise SystemExit(f"geoviz atlas: {err.args[0] if err.args else err}") from None
        untrained = [s for s, t in ((args.a, trained_a), (args.b, trained_b)) if not t]
        title = f"Geometry atlas: {args.a} vs {args.b} on {args.data}" + (f" ({', '.join(untrained)} untrained)" if untrained else "")
        print(write_atlas_report(atlas, args.out, floor=floor, title=title))
        print(json.dumps({"best_match": atlas.best_match(), "seconds": atlas.seconds}))
    elif args.cmd == "explore":
        from .experiments.explore import ExploreConfig, prepare_explore, run_explore
        from .viz.explore import write_explore_report

        try:  # bad input fails here, with a message; the analyses run outside (a bug there is a traceback)
            cfg = ExploreConfig.from_profile(args.profile, model=args.model, weights=args.weights, data=args.data, model_b=args.model_b,
                                             weights_b=args.weights_b, layers=args.layers, n_images=args.n_images, projection=args.projection,
                                             size=args.size, device=args.device, seed=args.seed, download=args.download,
                                             class_geometry=args.class_geometry, cam_images=args.cam_images, batch_size=args.batch_size,
                                             random_floor=not args.no_random_floor)
            inputs = prepare_explore(cfg)
        except _user_errors() as err:
            raise SystemExit(f"geoviz explore: {err.args[0] if err.args else err}") from None
        result = run_explore(cfg, inputs=inputs)
        result.save_metrics()
        print(write_explore_report(result, args.out))
        m = result.metrics
        print(json.dumps({"probes": [[r["layer"], round(r["accuracy"], 4)] for r in m["probes"]], "class_geometry": m.get("class_geometry"),
                          "images_per_second": m["images_per_second"], "run": str(result.run.path)}))
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
