"""A study's runs as units, carried out locally or as Ray tasks (a local Ray instance on 2 CPUs): the
same result, faults survived, nothing rerun, failures reported with their cause."""

import glob
import json
import os
import signal
import sys
import threading
import time

import pytest
import ray
import torch

from geoviz.experiments import STUDIES, study_runner
from geoviz.experiments.executors import Execution, RunsFailed, RunUnit, WorkerSpec, run_unit_in_worker, run_units
from geoviz.experiments.transfer import TransferConfig, TransferStudy, run_transfer
from geoviz.runs import code_fingerprint

pytestmark = pytest.mark.xdist_group("ray")  # one worker starts Ray for all of them (make test: --dist loadgroup)

SMOKE = TransferConfig.from_profile("smoke")
# wall times and speeds: the only values allowed to differ between two executions (students and pruning
# measure speeds once per architecture in each process: under Ray, in each worker)
TIMINGS = ("epoch_seconds", "prune_seconds", "images_per_s", "speedup_b", "latency_")


def without_timings(x):
    if isinstance(x, dict):
        return {k: without_timings(v) for k, v in x.items() if not any(t in str(k) for t in TIMINGS)}
    if isinstance(x, list | tuple):
        return [without_timings(v) for v in x]
    return x


def comparable(result) -> dict:
    """Everything a transfer result reports, wall times left out."""
    return without_timings(
        {
            "summary": result.summary(),
            "runs": result.runs,
            "geometry_init": result.geometry_init,
            "curves": {f"{a}|{s}": h for (a, s), h in result.curves().items()},
        }
    )


def weights(experiment_path) -> dict:
    """Every run's last checkpoint, tensor by tensor."""
    out = {}
    for p in sorted(experiment_path.rglob("last.pt")):
        state = torch.load(p, map_location="cpu", weights_only=True)["model"]
        out[str(p.relative_to(experiment_path))] = state
    return out


def assert_same_weights(a, b, runs: int = 21):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and len(wa) >= runs
    for run in wa:
        assert wa[run].keys() == wb[run].keys()
        assert all(torch.equal(wa[run][k], wb[run][k]) for k in wa[run]), run


@pytest.fixture
def local_ray():
    """A local Ray instance on 2 CPUs, started once per pytest process (under xdist's loadgroup, the one
    worker running this module) and left for the next test; Ray shuts it down when the process ends."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 2**20)


def _ray_worker_pid(task_name: str) -> int | None:
    """The process Ray runs task ``task_name`` in (its title is ray::<name> while it runs)."""
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as f:
                title = f.read().split(b"\0")[0].decode(errors="replace").strip()
        except OSError:
            continue
        if title == f"ray::{task_name}":
            return int(path.split("/")[2])
    return None


def test_ray_gives_the_local_result_even_with_a_worker_killed_mid_run_and_a_second_invocation_reruns_nothing(
    local_ray, tmp_path, capsys
):
    """The smoke profile through Ray, its teacher's worker killed after a checkpoint: Ray retries the
    task, the teacher resumes, and the whole result and every run's weights equal the local run's.
    (One study serves these checks, and the study command and a worker's teacher reload below: each
    study costs 30-45 s of the suite's 25 minutes.)"""
    local_smoke = run_transfer(SMOKE, run_root=tmp_path / "local", progress=False)  # the reference
    assert local_smoke.execution["executor"] == "local" and len(local_smoke.execution["ran"]) == 1 + 20
    tmp_path = tmp_path / "ray"
    teacher = tmp_path / local_smoke.experiment.name / "teacher"
    out: dict = {}

    def drive():
        try:
            out["result"] = run_transfer(SMOKE, run_root=tmp_path, progress=False, executor="ray")
        except BaseException as err:  # noqa: BLE001 — re-raised below, in the test's thread
            out["error"] = err

    thread = threading.Thread(target=drive, daemon=True)  # a hang fails the test, not the whole suite
    thread.start()
    deadline, checkpoint_epoch = time.monotonic() + 120, None
    while checkpoint_epoch is None and time.monotonic() < deadline and thread.is_alive():
        pid = _ray_worker_pid("teacher")
        if pid is not None and (teacher / "last.pt").is_file():
            epoch = torch.load(teacher / "last.pt", map_location="cpu", weights_only=True)["epoch"]
            if epoch < SMOKE.teacher_epochs:  # mid-training: the teacher's worker dies after a checkpoint
                os.kill(pid, signal.SIGKILL)
                checkpoint_epoch = epoch
        time.sleep(0.02)
    assert checkpoint_epoch is not None, "the teacher's worker was never seen mid-training"
    # the checkpoint and the epochs logged at the kill (a later epoch may be logged, not yet checkpointed)
    assert torch.load(teacher / "last.pt", map_location="cpu", weights_only=True)["epoch"] == checkpoint_epoch
    before = json.loads((teacher / "metrics.json").read_text())["epochs"]
    thread.join(timeout=300)
    assert not thread.is_alive(), "the study hung after its worker was killed"
    if "error" in out:
        raise out["error"]
    res = out["result"]
    after = res.teacher_summary["history"]
    # resumed, not restarted: the epochs up to the checkpoint keep the records (wall times too) written before the kill
    assert after[:checkpoint_epoch] == before[:checkpoint_epoch] and len(after) == SMOKE.teacher_epochs
    assert res.execution["executor"] == "ray" and sorted(res.execution["ran"]) == sorted(local_smoke.execution["ran"])
    assert comparable(res) == comparable(local_smoke)
    assert_same_weights(res.experiment.path, local_smoke.experiment.path)

    # every file inside the runs' folders (the study's own metrics.json above them is rewritten, as it should be)
    stamps = {p: p.stat().st_mtime_ns for p in res.experiment.path.glob("*/*") if p.is_file()}
    assert len(stamps) >= 3 * 21
    again = run_transfer(SMOKE, run_root=tmp_path, progress=False, executor="ray")
    assert again.execution["ran"] == [] and len(again.execution["reused"]) == 21
    assert comparable(again) == comparable(local_smoke)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "a finished run was touched"
    _the_study_command_reads_back_a_finished_study(local_smoke, capsys)
    _a_worker_loads_the_teacher_again_when_it_was_trained_again(local_smoke, tmp_path / "reload")


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_failed_teacher_is_reported_with_its_error_and_its_students_are_not_run(executor, tmp_path, request):
    if executor == "ray":
        request.getfixturevalue("local_ray")
    cfg = SMOKE.replace(lr=1e30, methods=("ce", "kd"), train_fractions=(1.0,))  # the teacher diverges at once
    out: dict = {}

    def drive():
        try:
            run_transfer(cfg, run_root=tmp_path, progress=False, executor=executor)
        except BaseException as err:  # noqa: BLE001
            out["error"] = err

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    thread.join(timeout=180)
    assert not thread.is_alive(), "the study hangs on a failed dependency"
    err = out.get("error")
    assert isinstance(err, RunsFailed), err
    assert err.failures["teacher"].startswith("FloatingPointError: epoch 1:")
    assert list(err.errors) == ["teacher"] and err.__cause__ is err.errors["teacher"]  # its traceback is shown
    students = [k for k in err.failures if k != "teacher"]
    assert sorted(students) == ["ce-f1-s0", "ce-f1-s1", "kd-f1-s0", "kd-f1-s1"]
    assert all(
        err.failures[k] == f"not run: it needs teacher, which failed ({err.failures['teacher']})" for k in students
    )
    assert "5 of 5 runs failed (0 finished" in str(err)
    assert not [p for k in students for p in tmp_path.rglob(k)]  # no student folder was even opened


class _Toy:
    """A study of arithmetic units: each adds its inputs' value to the sum of what it needs."""

    gpus_per_run = 1.0

    def __init__(self, done=(), fail=()):
        self.done, self.fail, self.calls = dict(done), set(fail), []

    def run_unit(self, unit, deps):
        self.calls.append(unit.key)
        if unit.key in self.fail:
            raise ValueError(f"{unit.key} broke")
        return unit.inputs["value"] + sum(deps.values())

    def unit_done(self, unit, deps):
        return self.done.get(unit.key)


def _toy_units():
    return [
        RunUnit("a", inputs={"value": 1}),
        RunUnit("b", ("a",), {"value": 10}),
        RunUnit("c", inputs={"value": 100}),
        RunUnit("d", ("b", "c"), {"value": 1000}),
    ]


def test_the_local_executor_runs_in_order_reads_back_finished_units_and_passes_results_on():
    study = _Toy()
    report = run_units(study, _toy_units(), progress=False)
    assert study.calls == ["a", "b", "c", "d"] and report.ran == ["a", "b", "c", "d"]
    assert report.results == {"a": 1, "b": 11, "c": 100, "d": 1111}

    study = _Toy(done={"a": 1, "c": 100})
    report = run_units(study, _toy_units(), progress=False)
    assert study.calls == ["b", "d"] and report.reused == ["a", "c"] and report.results["d"] == 1111

    study = _Toy(fail={"b"})
    with pytest.raises(RunsFailed) as err:
        run_units(study, _toy_units(), progress=False)
    assert study.calls == ["a", "b", "c"]  # c does not need b: it still runs
    assert err.value.failures == {
        "b": "ValueError: b broke",
        "d": "not run: it needs b, which failed (ValueError: b broke)",
    }
    assert err.value.report.results == {"a": 1, "c": 100}


def test_units_and_executions_are_checked_before_anything_runs(local_ray, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match=r"run 'b' needs \['a'\], which are not listed before it"):
        run_units(_Toy(), [RunUnit("b", ("a",)), RunUnit("a")], progress=False)
    with pytest.raises(ValueError, match="run 'a' is listed twice"):
        run_units(_Toy(), [RunUnit("a"), RunUnit("a")], progress=False)
    with pytest.raises(ValueError, match=r"executor='dask': expected one of \('local', 'ray'\)"):
        Execution("dask")
    with pytest.raises(ValueError, match=r"21 runs \(the first: 'teacher', 4 CPUs and 0 GPUs\) fit on no node"):
        run_transfer(SMOKE, run_root=tmp_path, progress=False, executor="ray", cpus_per_run=4)  # Ray would wait
    assert not list(tmp_path.rglob("*.pt"))  # refused before any run started
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    with pytest.raises(ImportError, match=r"pip install 'geoviz\[ray\]'"):
        run_units(_Toy(), _toy_units(), Execution("ray"), progress=False)


def test_a_worker_running_other_code_than_the_driver_refuses(tmp_path):
    spec = WorkerSpec(
        TransferStudy, SMOKE, str(tmp_path), "current", {**code_fingerprint(), "source": "0123456789abcdef"}
    )
    with pytest.raises(RuntimeError, match="runs other code than the driver: the geoviz sources changed"):
        run_unit_in_worker(spec, RunUnit("teacher"), {}, 1)
    assert not any(tmp_path.iterdir())


def _the_study_command_reads_back_a_finished_study(local_smoke, capsys):
    from geoviz.cli import main

    root = str(local_smoke.experiment.root)
    assert main(["study", "transfer", "--profile", "smoke", "--runs", root]) == 0
    out = capsys.readouterr().out
    assert "21 runs (local): 0 ran, 21 reused" in out and '"claims"' in out


def test_ray_is_refused_for_a_study_without_units_and_ray_options_without_ray():
    from geoviz.cli import main
    from geoviz.experiments._study import Study

    class OneRun(Study):  # a study that does not list its runs
        key = "one-run"

    with pytest.raises(ValueError, match="study 'one-run' does not list its runs as units: executor 'ray' cannot"):
        OneRun(SMOKE, execution=Execution("ray"))
    with pytest.raises(SystemExit, match="set how Ray runs a study: add --executor ray"):
        main(["study", "transfer", "--profile", "smoke", "--gpus-per-run", "0.5"])
    with pytest.raises(TypeError, match="unexpected keyword argument 'executr'"):
        run_transfer(SMOKE, executr="ray")  # a misspelt option fails before anything is made


def _a_worker_loads_the_teacher_again_when_it_was_trained_again(local_smoke, tmp_path):
    import shutil

    name = local_smoke.experiment.name
    shutil.copytree(local_smoke.experiment.path / "teacher", tmp_path / name / "teacher")
    study = TransferStudy.for_worker(SMOKE, str(tmp_path), "current")  # as a Ray worker keeps it between tasks
    study._ensure_teacher(cache=False)
    best = tmp_path / name / "teacher" / "best.pt"
    state = torch.load(best, map_location="cpu", weights_only=True)
    first = next(iter(study.teacher.parameters())).detach().clone()
    assert torch.equal(first, next(v for k, v in state["model"].items() if k.endswith("weight")))
    state["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, best)  # the teacher trained again since (another study of the same session)
    study._ensure_teacher(cache=False)
    assert torch.equal(next(iter(study.teacher.parameters())).detach(), first + 1)


def test_the_ray_tests_share_one_worker(request):
    """Under ``--dist loadgroup`` this module's tests must carry the group's tag, or xdist splits them and
    both workers start Ray and the studies (pytest 9.2 broke the tagging: pyproject keeps pytest below it)."""
    if getattr(request.config.option, "loadgroup", False):
        assert request.node.nodeid.endswith("@ray"), request.node.nodeid


def _study_result(result) -> str:
    """What a study reports (its summary and every curve), wall times left out, as JSON values."""
    parts = {"summary": result.summary(), "curves": {f"{a}|{s}": h for (a, s), h in result.curves().items()}}
    return json.dumps(without_timings(parts), default=lambda x: x.tolist(), sort_keys=True)  # NaN equals NaN here


# fewer runs of each kind where a smoke profile has several (three invocations per study, on one worker)
SMALLER = {
    "angles": {"methods": ("ce", "ical")},
    "students": {"students": ("resnet8",)},
    "keypoints": {"budgets": (4,)},
}


@pytest.mark.parametrize("name", [n for n in STUDIES if n != "transfer"])  # transfer: the test above
def test_every_study_with_units_gives_the_local_result_through_ray_and_a_second_invocation_reruns_nothing(
    name, local_ray, tmp_path
):
    """Each study's smoke profile, run by the local executor and by Ray into another root: the same
    summary (tables, claims), curves and weights; then the Ray root read back by the local executor."""
    config, run = study_runner(name)
    cfg = config.from_profile("smoke").replace(**SMALLER.get(name, {}))
    local = run(cfg, run_root=tmp_path / "local", progress=False)
    by_ray = run(cfg, run_root=tmp_path / "ray", progress=False, executor="ray")
    assert local.execution["executor"] == "local" and by_ray.execution["executor"] == "ray"
    assert sorted(by_ray.execution["ran"]) == sorted(local.execution["ran"]) and local.execution["reused"] == []
    assert _study_result(by_ray) == _study_result(local)
    assert_same_weights(by_ray.experiment.path, local.experiment.path, runs=len(local.curves()))

    units = set(by_ray.execution["ran"])  # (cnnmda's case study is trained in the driver, not a unit: left out)
    stamps = {p: p.stat().st_mtime_ns for p in by_ray.experiment.path.glob("*/*") if p.parent.name in units}
    assert len({p.parent for p in stamps}) == len(units & {p.name for p in by_ray.experiment.path.iterdir()})
    again = run(cfg, run_root=tmp_path / "ray", progress=False)
    assert again.execution["ran"] == [] and len(again.execution["reused"]) == again.execution["runs"]
    assert _study_result(again) == _study_result(local)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "a finished run was touched"


def test_a_run_made_from_other_results_of_the_runs_it_needs_is_made_again(tmp_path, capsys):
    """``Study.unit_row``: a unit's row is read back only while the rows it was made from are the same;
    a needed run that ran again with another result makes it run again (its folder emptied first)."""
    import shutil

    from geoviz.experiments._study import Study
    from geoviz.runs import RunDir

    class Sums(Study):
        key, offset = "sums", 0

        def units(self):
            return [RunUnit("a", inputs={"value": 1}), RunUnit("b", ("a",), {"value": 10})]

        def measure_unit(self, unit, deps):
            self.calls.append(unit.key)
            RunDir(unit.key, self.exp.path).save_checkpoint({"made": unit.key}, "made.pt")  # something the run wrote
            own = unit.inputs["value"] + (self.offset if unit.key == "a" else 0)
            return {"sum": own + sum(d["row"]["sum"] for d in deps.values())}

    def study(offset=0):
        s = Sums(SMOKE, run_root=tmp_path, progress=False)
        s.exp, s.calls, s.offset = RunDir("sums", tmp_path), [], offset
        return s

    first = study()
    assert first.run_units().results["b"]["row"] == {"sum": 11} and first.calls == ["a", "b"]
    again = study()
    assert again.run_units().reused == ["a", "b"] and again.calls == []  # same results: read back
    shutil.rmtree(tmp_path / "sums" / "a")
    other = study(offset=5)  # a runs again and gives another result: b was made from the old one
    report = other.run_units()
    assert other.calls == ["a", "b"] and report.results["b"]["row"] == {"sum": 16} and report.reused == []
    assert "sums/b was made from other results of a (run again since): again" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "sums" / "a")
    same = study(offset=5)  # a runs again with the same result: b's row still holds
    assert same.run_units().results["b"]["row"] == {"sum": 16} and same.calls == ["a"]
