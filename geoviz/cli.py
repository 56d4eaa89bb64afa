"""``geoviz``: the experiments headless, and batch runs of the notebooks (papermill).

    geoviz models | datasets            list what the registries hold
    geoviz train --config FILE.yaml     one training run from a config (also under torchrun)
    geoviz quickstart [--profile P]     the quickstart experiment without a notebook
    geoviz notebook NAME [-p key value] run one notebook into runs/notebooks/ (+ HTML)
    geoviz demo [--profile P]           run every notebook headless into runs/notebooks/ with HTML
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def _find_notebook(name: str) -> Path:
    p = Path(name)
    if p.is_file():
        return p
    hits = [nb for nb in _notebooks() if nb.stem == name or nb.stem.startswith(name) or nb.stem.split("_", 1)[-1] == name]
    if not hits:
        from ._utils import unknown_name_message

        raise SystemExit(unknown_name_message("notebook", name, [nb.stem for nb in _notebooks()]))
    return hits[0]


def _kernel_name() -> str:
    from jupyter_client.kernelspec import KernelSpecManager

    return "geoviz" if "geoviz" in KernelSpecManager().find_kernel_specs() else "python3"


def _parse_value(v: str):
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def run_notebook(path: Path, out_dir: Path, parameters: dict | None = None, *, profile: str | None = None, html: bool = True, timeout: int | None = None) -> Path:
    """Execute a notebook with papermill into ``out_dir`` and (optionally) export HTML beside it."""
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / path.name
    env_profile = os.environ.get("GEOVIZ_PROFILE")
    if profile:
        os.environ["GEOVIZ_PROFILE"] = profile
    try:
        pm.execute_notebook(str(path), str(out), parameters=parameters or {}, kernel_name=_kernel_name(),
                            cwd=str(Path.cwd()), progress_bar=False, execution_timeout=timeout)
    finally:
        if profile:
            if env_profile is None:
                os.environ.pop("GEOVIZ_PROFILE", None)
            else:
                os.environ["GEOVIZ_PROFILE"] = env_profile
    if html:
        import nbformat
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(out), as_version=4))
        out.with_suffix(".html").write_text(body, encoding="utf-8")
    return out


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
    nb = sub.add_parser("notebook", help="run one notebook with papermill")
    nb.add_argument("name", help="notebook file, or its name without number (quickstart)")
    nb.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    nb.add_argument("--profile", choices=("smoke", "quick", "full"), default=None)
    nb.add_argument("--out", default="runs/notebooks")
    nb.add_argument("--no-html", action="store_true")
    d = sub.add_parser("demo", help="run every notebook headless (papermill) and export HTML")
    d.add_argument("--profile", choices=("smoke", "quick", "full"), default="quick")
    d.add_argument("--out", default="runs/notebooks")
    args = ap.parse_args(argv)

    if args.cmd == "models":
        from .models import list_models

        print("\n".join(list_models()))
        print("tv:<name> for any torchvision model, e.g. tv:resnet18 (weights only from local files)")
    elif args.cmd == "datasets":
        from .datasets import list_datasets

        print("\n".join(list_datasets()))
    elif args.cmd == "train":
        from .experiments.train import load_config, run_train

        cfg = load_config(args.config, **{k: _parse_value(v) for k, v in args.set})
        res = run_train(cfg)
        if res.run is not None:
            print(json.dumps(res.run.read_metrics()["summary"], indent=1))
    elif args.cmd == "quickstart":
        from .experiments.quickstart import QuickstartConfig, run_quickstart

        res = run_quickstart(QuickstartConfig.from_profile(args.profile, seed=args.seed))
        print(json.dumps(res.save_metrics(), indent=1))
    elif args.cmd == "notebook":
        params = {k: _parse_value(v) for k, v in args.parameter}
        out = run_notebook(_find_notebook(args.name), Path(args.out), params, profile=args.profile, html=not args.no_html)
        print(out)
    elif args.cmd == "demo":
        for path in _notebooks():
            print(f"running {path.name} (profile {args.profile}) ...", flush=True)
            out = run_notebook(path, Path(args.out), profile=args.profile)
            print(f"  → {out} and {out.with_suffix('.html')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
