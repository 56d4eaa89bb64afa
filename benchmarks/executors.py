"""The transfer study's runs one after another in one process (``executor="local"``) against Ray tasks
(``executor="ray"``) on this machine's cores, and what Ray costs per task.

Each study runs once in a fresh child process (a fresh runs root, nothing reused), with the same
config: ``local`` with torch on every core, ``ray`` with ``ray.init(num_cpus=cores)`` and one task of
one CPU (one torch thread) per run, so ``cores`` runs train at once. The teacher trains first and
alone in both. A study takes minutes, so each is timed once; Ray's start (``ray.init``) is timed on
its own and left out of the study's wall time. Both children write their tables: ``same_table`` says
whether they are identical (with different thread counts they may differ in the last bits).

Ray's per-task overhead, warm (workers started and a first call paid): the median round trip of an
empty task over ``--tasks`` calls, and the time a fresh worker takes to rebuild the study before
its first unit (data, networks: ``Study.for_worker``).

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(executor: str, profile: str, cores: int, root: str, out: str) -> None:
    """One study in this process: its wall time and table into ``out``."""
    import torch

    torch.set_num_threads(cores)
    from geoviz.experiments.transfer import TransferConfig, run_transfer

    cfg = TransferConfig.from_profile(profile)
    init_s = 0.0
    if executor == "ray":
        import ray

        t = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - t
    t = time.perf_counter()
    res = run_transfer(cfg, run_root=root, progress=False, executor=executor)
    wall = time.perf_counter() - t
    Path(out).write_text(
        json.dumps({"wall_s": wall, "init_s": init_s, "runs": res.execution["runs"], "table": res.table()})
    )


def overhead(cores: int, tasks: int, profile: str, root: str) -> dict:
    """Ray's round trip for an empty task (warm), and a worker's rebuild of the study."""
    import ray

    from geoviz.experiments.transfer import TransferConfig, TransferStudy

    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)

    @ray.remote(num_cpus=1)
    def empty():
        return None

    @ray.remote(num_cpus=1)
    def rebuild(cfg, root):
        t = time.perf_counter()
        TransferStudy.for_worker(cfg, root, "current")
        return time.perf_counter() - t

    ray.get([empty.remote() for _ in range(2 * cores)])  # workers started, first calls paid
    trips = []
    for _ in range(tasks):
        t = time.perf_counter()
        ray.get(empty.remote())
        trips.append(time.perf_counter() - t)
    cfg = TransferConfig.from_profile(profile)
    rebuilds = ray.get([rebuild.remote(cfg, root) for _ in range(cores)])
    ray.shutdown()
    return {
        "ray_task_round_trip_median_ms": round(1000 * statistics.median(trips), 3),
        "ray_task_round_trip_max_ms": round(1000 * max(trips), 3),
        "worker_study_rebuild_median_s": round(statistics.median(rebuilds), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="quick", choices=("smoke", "quick", "full"))
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    ap.add_argument("--tasks", type=int, default=200, help="empty tasks timed for the per-task overhead")
    ap.add_argument("--child", nargs=3, metavar=("EXECUTOR", "ROOT", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        executor, root, out = args.child
        return child(executor, args.profile, args.cores, root, out)
    line = {"benchmark": "executors", "profile": args.profile, "cores": args.cores}
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for executor in ("local", "ray"):
            out = Path(tmp) / f"{executor}.json"
            cmd = [sys.executable, __file__, "--profile", args.profile, "--cores", str(args.cores)]
            subprocess.run([*cmd, "--child", executor, str(Path(tmp) / executor), str(out)], check=True)
            results[executor] = json.loads(out.read_text())
        line.update(overhead(args.cores, args.tasks, args.profile, str(Path(tmp) / "rebuild")))
    local, ray_ = results["local"], results["ray"]
    line.update(
        {
            "runs": local["runs"],
            "local_wall_s": round(local["wall_s"], 2),
            "ray_wall_s": round(ray_["wall_s"], 2),
            "ray_init_s": round(ray_["init_s"], 2),
            "ray_speedup_over_local": round(local["wall_s"] / ray_["wall_s"], 3),
            "same_table": local["table"] == ray_["table"],
        }
    )
    print(json.dumps(line))


if __name__ == "__main__":
    main()
