"""``geoviz``: the experiments headless, and batch runs of the notebooks (papermill).

geoviz models | datasets            list what the registries hold
geoviz train --config FILE.yaml     one training run from a config (also under torchrun)
geoviz quickstart [--profile P]     the quickstart experiment without a notebook
geoviz atlas A B --data D --out F   layer × layer CKA of two networks (names, tv:/timm: with --weights-a/-b, .pt) as one
HTML report
geoviz explore MODEL --data folder:PATH --out F   every explorer on your network and your images, one HTML report
geoviz notebook NAME [-p key value] run one notebook into runs/notebooks/ (+ HTML)
geoviz demo [--profile P]           run every notebook headless into runs/notebooks/ with HTML
geoviz study NAME [--profile P] [--executor ray --address auto --gpus-per-run 0.25] [--set KEY VALUE]
                                    one study headless (its runs on Ray where the study lists them as units)
geoviz runs [--clean-stale]         list the runs (study, status, age, the code that made them); remove stale ones

geoviz --reuse stale-ok CMD ...     accept runs made by other code (default: refuse them); --reuse fresh starts them
over
"""

from __future__ import annotations

import argparse
import json
import os
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


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="geoviz", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--reuse",
        choices=("current", "stale-ok", "fresh"),
        default=None,
        help="runs made by other code than this one: refuse them (current, the default; or $GEOVIZ_REUSE), accept them "
        "(stale-ok) or delete and redo them (fresh)",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("models", help="list the model registry")
    sub.add_parser("datasets", help="list the data sets")
    tr = sub.add_parser("train", help="one training run from a YAML config (works under torchrun)")
    tr.add_argument("--config", required=True)
    tr.add_argument(
        "--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"), help="override a config key"
    )
    q = sub.add_parser("quickstart", help="run the quickstart experiment headless")
    q.add_argument("--profile", choices=("smoke", "quick", "full"), default=None)
    q.add_argument("--seed", type=int, default=0)
    _atlas_arguments(
        sub.add_parser("atlas", help="compare every layer of network A with every layer of network B: an HTML report")
    )
    _explore_arguments(
        sub.add_parser("explore", help="every explorer on your network and your images, no training: one HTML report")
    )
    nb = sub.add_parser("notebook", help="run one notebook with papermill")
    nb.add_argument("name", help="notebook file, or its name without number (quickstart)")
    nb.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    nb.add_argument("--profile", choices=("smoke", "quick", "full"), default=None)
    nb.add_argument("--out", default=None, help="output folder (default: <runs root>/notebooks)")
    nb.add_argument("--no-html", action="store_true")
    d = sub.add_parser("demo", help="run every notebook headless (papermill) and export HTML")
    d.add_argument("--profile", choices=("smoke", "quick", "full"), default="quick")
    d.add_argument("--out", default=None, help="output folder (default: <runs root>/notebooks)")
    st = sub.add_parser("study", help="run one study headless; --executor ray hands its runs to Ray tasks")
    st.add_argument("name", help="the study: transfer, angles, probes, keypoints, pruning, students, ensembles, cnnmda")
    st.add_argument("--profile", choices=("smoke", "quick", "full"), default=None)
    st.add_argument("--executor", choices=("local", "ray"), default="local")
    st.add_argument("--address", default=None, help="Ray: a running cluster's address, or auto (default: a local one)")
    st.add_argument("--gpus-per-run", type=float, default=None, help="Ray: each run's share of a GPU (0.25: 4 per GPU)")
    st.add_argument("--cpus-per-run", type=float, default=1.0, help="Ray: CPUs (and torch threads) per run")
    st.add_argument("--runs", default=None, help="the runs root (default: $GEOVIZ_RUNS or runs/; shared on a cluster)")
    st.add_argument(
        "--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"), help="override a config field"
    )
    r = sub.add_parser(
        "runs", help="list the runs and the code that made them; --clean-stale removes those made by other code"
    )
    r.add_argument("--root", default=None, help="the runs root (default: $GEOVIZ_RUNS or runs/)")
    r.add_argument("--clean-stale", action="store_true", help="remove the runs made by other code (asks first)")
    r.add_argument("--yes", action="store_true", help="with --clean-stale: do not ask")
    return ap


def _atlas_arguments(at: argparse.ArgumentParser) -> None:
    at.add_argument(
        "a",
        help="network A: a checkpoint (.pt, from geoviz.models.save_model), tv:<name> "
        "/ timm:<name> (with --weights-a), or a zoo model name (untrained)",
    )
    at.add_argument("b", help="network B, as A")
    at.add_argument(
        "--weights-a",
        default=None,
        help="weights of a tv: / timm: network A: a name (DEFAULT) read from the cache, or a file",
    )
    at.add_argument("--weights-b", default=None)
    at.add_argument(
        "--data",
        default="shapes10",
        help="data set name (geoviz datasets; its test split) or folder:PATH (all its images)",
    )
    at.add_argument("--n-images", type=int, default=2000)
    at.add_argument("--layers-a", nargs="+", default=["auto"], help="module paths or globs (default: the blocks)")
    at.add_argument("--layers-b", nargs="+", default=["auto"])
    at.add_argument("--embedding", choices=("umap", "pca", "none"), default="umap")
    at.add_argument("--batch-size", type=int, default=128)
    at.add_argument("--device", default="auto")
    at.add_argument("--seed", type=int, default=0)
    at.add_argument(
        "--download", action="store_true", help="let torchvision / timm fetch missing weights (needs internet)"
    )
    at.add_argument(
        "--floor",
        action="store_true",
        help="also compare A with B untrained (B's architecture, fresh weights): the baseline",
    )
    at.add_argument("--out", default="atlas.html")


def _explore_arguments(ex: argparse.ArgumentParser) -> None:
    ex.add_argument(
        "model",
        nargs="?",
        default=None,
        help="tv:<name>, timm:<name>, a checkpoint (.pt), a zoo name; default: the quickstart network",
    )
    ex.add_argument(
        "--weights",
        default=None,
        help="weights name (DEFAULT, IMAGENET1K_V2) read from the torch hub / timm cache, or a file",
    )
    ex.add_argument(
        "--data",
        default=None,
        help="folder:PATH (one subfolder per class, or a flat folder) or a data set name; default: "
        "shapes10 images written to a folder",
    )
    ex.add_argument("--model-b", default=None, help="a second network for the atlas (as MODEL)")
    ex.add_argument("--weights-b", default=None)
    ex.add_argument("--layers", nargs="+", default=None, help="module paths or globs (default: the blocks)")
    ex.add_argument("--n-images", type=int, default=None)
    ex.add_argument("--projection", choices=("umap", "pca"), default=None)
    ex.add_argument("--size", type=int, default=None, help="input size in px (default: what the weights expect)")
    ex.add_argument(
        "--class-geometry",
        choices=("auto", "head", "means"),
        default=None,
        help="class angles from the head's class vectors (head), from class "
        "means of the penultimate features (means), or whichever fits (auto)",
    )
    ex.add_argument("--cam-images", type=int, default=None, help="images explained by Grad-CAM in the report")
    ex.add_argument("--batch-size", type=int, default=None)
    ex.add_argument(
        "--no-random-floor", action="store_true", help="leave out the random-network floor (saves a forward pass)"
    )
    ex.add_argument("--profile", choices=("smoke", "quick", "full"), default="quick")
    ex.add_argument("--device", default="auto")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument(
        "--download", action="store_true", help="let torchvision / timm fetch missing weights (needs internet)"
    )
    ex.add_argument("--out", default="report.html")


def _fail(cmd: str, err: BaseException):
    raise SystemExit(f"geoviz {cmd}: {err.args[0] if err.args else err}") from None


def _models(args) -> None:
    from .models import list_models

    print("\n".join(list_models()))
    print("tv:<name> for any torchvision model, e.g. tv:resnet18 (weights only from local files)")


def _datasets(args) -> None:
    from .datasets import list_datasets

    print("\n".join(list_datasets()))
    print("folder:<path> for a folder of your own images (one subfolder per class, or a flat folder)")


def _train(args) -> None:
    from .experiments.train import load_config, prepare_train, run_train

    try:  # a bad config (or missing data, an unknown layer, ...) is a message, not a traceback
        cfg = load_config(args.config, **{k: _parse_value(v) for k, v in args.set})
        prepared = prepare_train(cfg)
    except _user_errors() as err:
        _fail("train", err)
    res = run_train(prepared)
    if res.run is not None:
        print(json.dumps(res.run.read_metrics()["summary"], indent=1))


def _quickstart(args) -> None:
    from .experiments.quickstart import QuickstartConfig, run_quickstart

    res = run_quickstart(QuickstartConfig.from_profile(args.profile, seed=args.seed))
    print(json.dumps(res.save_metrics(), indent=1))


def _atlas(args) -> None:
    from .experiments.atlas import compare_networks
    from .viz.atlas import write_atlas_report

    try:
        atlas, floor, title = compare_networks(
            args.a,
            args.b,
            args.data,
            weights_a=args.weights_a,
            weights_b=args.weights_b,
            n_images=args.n_images,
            layers_a=args.layers_a,
            layers_b=args.layers_b,
            embedding=None if args.embedding == "none" else args.embedding,
            batch_size=args.batch_size,
            device=args.device,
            seed=args.seed,
            download=args.download,
            floor=args.floor,
        )
    except _user_errors() as err:
        _fail("atlas", err)
    print(write_atlas_report(atlas, args.out, floor=floor, title=title))
    print(json.dumps({"best_match": atlas.best_match(), "seconds": atlas.seconds}))


def _explore(args) -> None:
    from .experiments.explore import ExploreConfig, prepare_explore, run_explore
    from .viz.explore import write_explore_report

    try:  # bad input fails here, with a message; the analyses run outside (a bug there is a traceback)
        cfg = ExploreConfig.from_profile(
            args.profile,
            model=args.model,
            weights=args.weights,
            data=args.data,
            model_b=args.model_b,
            weights_b=args.weights_b,
            layers=args.layers,
            n_images=args.n_images,
            projection=args.projection,
            size=args.size,
            device=args.device,
            seed=args.seed,
            download=args.download,
            class_geometry=args.class_geometry,
            cam_images=args.cam_images,
            batch_size=args.batch_size,
            random_floor=not args.no_random_floor,
        )
        inputs = prepare_explore(cfg)
    except _user_errors() as err:
        _fail("explore", err)
    result = run_explore(cfg, inputs=inputs)
    result.save_metrics()
    print(write_explore_report(result, args.out))
    m = result.metrics
    print(
        json.dumps(
            {
                "probes": [[r["layer"], round(r["accuracy"], 4)] for r in m["probes"]],
                "class_geometry": m.get("class_geometry"),
                "images_per_second": m["images_per_second"],
                "run": str(result.run.path),
            }
        )
    )


def _notebook(args) -> None:
    params = {k: _parse_value(v) for k, v in args.parameter}
    out_dir = Path(args.out) if args.out else runs_root() / "notebooks"
    print(run_notebook(find_notebook(args.name), out_dir, params, profile=args.profile, html=not args.no_html))


def _demo(args) -> None:
    nbs = list_notebooks()
    if not nbs:
        raise NoNotebooks(no_notebooks_message())
    out_dir = Path(args.out) if args.out else runs_root() / "notebooks"
    for path in nbs:
        print(f"running {path.name} (profile {args.profile}) ...", flush=True)
        out = run_notebook(path, out_dir, profile=args.profile)
        print(f"  → {out} and {out.with_suffix('.html')}", flush=True)


def _study(args) -> None:
    from .experiments import study_runner

    try:
        config, runner = study_runner(args.name)
        cfg = config.from_profile(args.profile, **{k: _parse_value(v) for k, v in args.set})
        if args.executor == "local" and (args.address or args.gpus_per_run is not None or args.cpus_per_run != 1.0):
            raise ValueError("--address, --gpus-per-run, --cpus-per-run set how Ray runs a study: add --executor ray")
        kwargs = dict(executor=args.executor, address=args.address, gpus_per_run=args.gpus_per_run)
        kwargs["cpus_per_run"] = args.cpus_per_run
    except _user_errors() as err:
        _fail("study", err)
    from .experiments.executors import RunsFailed

    try:
        result = runner(cfg, run_root=args.runs, **kwargs)
    except (RunsFailed, *_user_errors()) as err:
        _fail("study", err)
    summary = result.save_metrics()
    print(json.dumps({"table": summary.get("table"), "claims": summary.get("claims")}, indent=1, default=str))
    if result.execution_text():
        print(result.execution_text())
    if result.experiment is not None:
        print(f"results: {result.experiment.path}")


def _runs(args) -> None:
    from .runs import list_runs, remove_runs

    rows = list_runs(args.root)
    if not rows:
        print(f"no runs in {args.root or runs_root()}")
        return
    header = ("name", "study", "status", "age", "config", "state", "code")
    table = [
        (r["name"], r["study"], r["status"], r["age"], r["config_hash"] or "-", r["state"], r["code"]) for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
    for line in (header, *table):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())
    stale = [r for r in rows if r["state"] == "stale"]
    if not args.clean_stale:
        print(
            f"{len(stale)} of {len(rows)} runs stale (made by other code); `geoviz runs --clean-stale` removes them"
            if stale
            else f"all {len(rows)} runs made by the current code"
        )
        return
    if not stale:
        print("no stale runs")
        return
    if not args.yes:
        answer = input(
            f"remove {len(stale)} stale runs "
            f"({', '.join(r['name'] for r in stale[:5])}{', ...' if len(stale) > 5 else ''})? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return
    print(f"removed {len(remove_runs(stale))} stale runs")


HANDLERS = {
    "models": _models,
    "datasets": _datasets,
    "train": _train,
    "quickstart": _quickstart,
    "atlas": _atlas,
    "explore": _explore,
    "notebook": _notebook,
    "demo": _demo,
    "study": _study,
    "runs": _runs,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.reuse and args.cmd in ("notebook", "demo"):  # the kernels read it from the environment
        os.environ["GEOVIZ_REUSE"] = args.reuse
    from .runs import reuse_policy

    with reuse_policy(args.reuse):
        HANDLERS[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
