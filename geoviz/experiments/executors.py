"""A study's runs as units, and the executors that carry them out.

A study that hands its runs out lists them as ``RunUnit`` s (``Study.units()``): a key (the run's
folder name), the keys it needs first (students need their teacher), its inputs (method, fraction,
seed...) and its share of a GPU. ``run_units`` carries them out with an executor:

- ``"local"``: one after another in this process, in the listed order (the default; what CI runs);
- ``"ray"``: one Ray task per run (``ray.init(address=...)``, an existing connection is kept); a
  worker process rebuilds the study (data, frozen teacher, teacher cache: once per process on CPUs,
  once per task on a GPU, where a process keeps the device it started on) and runs units into
  their run folders; ``num_gpus`` per task from the unit or ``gpus_per_run`` (fractional: several
  small students share a GPU), ``num_cpus`` from ``cpus_per_run`` (and as many torch threads); runs
  no node can hold are refused before anything starts. Each worker holds its own copy of the data,
  the teacher and its cache (up to ``TeacherCache``'s budget): count that per task on a large node.

Both executors read back every run whose folder says it finished (never rerun), give each unit the
results of the units it needs, and list the failures at the end (``RunsFailed``): a unit whose
dependency failed is not started and reports that dependency's error. The run folders are the record:
a worker writes into the runs root the driver uses, so on a cluster that root must be a path every
node sees (``GEOVIZ_RUNS`` on a shared filesystem); a task returns its run's row (summary and
curve), which is what the driver would read back from the folder. A worker that dies mid-run (killed, out of
memory, node lost) is retried by Ray up to ``max_retries`` times and resumes from the run's last
checkpoint; a worker running other geoviz code than the driver refuses to run (so do not edit the
package on a node while a sweep runs there: workers started after the edit refuse).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .._utils import progress_bar

EXECUTORS = ("local", "ray")


@dataclass(frozen=True, eq=False)
class RunUnit:
    """One run of a study.

    Attributes
    ----------
    key : the run's name, unique in the study (its folder, where it has one).
    needs : keys of the units that must finish first; their results reach ``Study.run_unit``.
    inputs : what the run is (JSON-able: method, fraction, seed, ...), read by the study's ``run_unit``.
    gpus : this unit's share of a GPU under Ray (None: the executor's ``gpus_per_run``).
    """

    key: str
    needs: tuple[str, ...] = ()
    inputs: dict = field(default_factory=dict)
    gpus: float | None = None


@dataclass(frozen=True)
class Execution:
    """How a study's runs are carried out (never part of its config: it changes no result).

    Attributes
    ----------
    executor : "local" (this process, in order) or "ray" (one task per run).
    address : Ray's address (None: ``$RAY_ADDRESS``, else a local instance; "auto": a running cluster).
    gpus_per_run : each run's share of a GPU under Ray (None: the study's default; 0 on a cluster without GPUs).
    cpus_per_run : CPUs (and torch threads) per Ray task.
    max_retries : how often Ray reruns a task whose worker died (the run resumes from its checkpoint).
    """

    executor: str = "local"
    address: str | None = None
    gpus_per_run: float | None = None
    cpus_per_run: float = 1.0
    max_retries: int = 3

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor={self.executor!r}: expected one of {EXECUTORS}")
        if self.gpus_per_run is not None and not 0 <= self.gpus_per_run <= 64:
            raise ValueError(f"gpus_per_run={self.gpus_per_run}: a share of a GPU (0.25: four runs per GPU) or a count")
        if not self.cpus_per_run > 0 or self.max_retries < 0:
            raise ValueError(
                f"cpus_per_run must be > 0 and max_retries >= 0, got {self.cpus_per_run}, {self.max_retries}"
            )


class RunsFailed(RuntimeError):
    """Runs of a study failed. ``failures``: ``{key: "Type: message"}``; ``errors``: ``{key: the
    exception}`` of the runs that raised (a Ray task's carries the worker's traceback); ``report``: what
    did finish. The first run's exception is the ``__cause__``, so its traceback is printed too."""

    def __init__(self, failures: dict[str, str], report: UnitsReport, errors: dict | None = None):
        self.failures, self.report, self.errors = failures, report, dict(errors or {})
        lines = "\n".join(f"  {k}: {v}" for k, v in failures.items())
        super().__init__(
            f"{len(failures)} of {report.total} runs failed ({len(report.results)} finished; their folders are kept "
            f"and a rerun resumes the rest):\n{lines}"
        )


@dataclass
class UnitsReport:
    """What ``run_units`` did.

    Attributes
    ----------
    executor : the executor's name.
    total : the number of units.
    results : ``{key: result}`` of every finished unit (read back or run now).
    ran : the keys run by this call, in the order they finished.
    reused : the keys read back from finished run folders (not rerun).
    """

    executor: str
    total: int = 0
    results: dict[str, Any] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The executor, the number of runs and the keys run now and read back (what a result keeps)."""
        return {"executor": self.executor, "runs": self.total, "ran": list(self.ran), "reused": list(self.reused)}


def run_units(study, units: list[RunUnit], execution: Execution | None = None, *, progress: bool = True) -> UnitsReport:
    """Carry out ``units`` of ``study`` (a ``Study`` with ``run_unit`` / ``unit_done``) with
    ``execution``'s executor; returns the report, or raises ``RunsFailed`` listing every failure."""
    execution = execution or Execution()
    _check_units(units)
    report = UnitsReport(execution.executor, total=len(units))
    _read_back_finished(study, units, report)
    todo = [u for u in units if u.key not in report.results]
    backend = _Ray(study, execution) if execution.executor == "ray" and todo else _Local(study)
    backend.check(todo)
    try:
        failures, errors = _drive(backend, todo, report, progress)
    finally:
        backend.close()  # an interrupted driver (Ctrl-C in a notebook) leaves no task writing into a run folder
    if failures:
        raise RunsFailed(failures, report, errors) from next(iter(errors.values()), None)
    return report


def _check_units(units: list[RunUnit]) -> None:
    """Keys unique, every need listed before the unit that needs it (so the list order is an order
    in which the local executor can run them)."""
    seen: set[str] = set()
    for u in units:
        if u.key in seen:
            raise ValueError(f"run {u.key!r} is listed twice")
        missing = [n for n in u.needs if n not in seen]
        if missing:
            raise ValueError(f"run {u.key!r} needs {missing}, which are not listed before it")
        seen.add(u.key)


def _read_back_finished(study, units: list[RunUnit], report: UnitsReport) -> None:
    for u in units:
        if all(n in report.results for n in u.needs):
            done = study.unit_done(u, {n: report.results[n] for n in u.needs})
            if done is not None:
                report.results[u.key] = done
                report.reused.append(u.key)


def _drive(backend, todo: list[RunUnit], report: UnitsReport, progress: bool) -> tuple[dict, dict]:
    """Submit each unit once its needs finished, collect results one at a time; a unit whose need
    failed fails with that need's error. Returns the failures (text) and the exceptions raised."""
    failures: dict[str, str] = {}
    errors: dict[str, BaseException] = {}
    bar = progress_bar(total=report.total, initial=report.total - len(todo), desc="runs", enabled=progress)
    while todo or backend.busy():
        for u in list(todo):
            failed = next((n for n in u.needs if n in failures), None)
            if failed is not None:
                failures[u.key] = f"not run: it needs {failed}, which failed ({failures[failed]})"
                todo.remove(u)
                bar.update(1)
            elif all(n in report.results for n in u.needs) and backend.has_room():
                backend.submit(u, {n: report.results[n] for n in u.needs})
                todo.remove(u)
        if not backend.busy():
            continue  # what is left waits on failures just recorded (or is nothing)
        key, ok, value = backend.wait_one()
        if ok:
            report.results[key] = value
            report.ran.append(key)
        else:
            failures[key], errors[key] = describe_error(value), value
        bar.update(1)
        bar.set_postfix_str(f"{len(failures)} failed: {', '.join(failures)}" if failures else key)
    bar.close()
    return failures, errors


def describe_error(err: BaseException) -> str:
    """``Type: message`` of the error a run raised (the original one inside Ray's wrapper)."""
    cause = getattr(err, "cause", None) or err
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}" + (" ..." if len(text) > 1 else "")


class _Local:
    """This process, one unit at a time, in the order submitted."""

    def __init__(self, study):
        self.study, self.queued = study, None

    def busy(self) -> bool:
        return self.queued is not None

    def has_room(self) -> bool:
        return self.queued is None

    def check(self, units: list[RunUnit]) -> None:
        pass  # this process runs whatever it is given

    def submit(self, unit: RunUnit, deps: dict) -> None:
        self.queued = (unit, deps)

    def close(self) -> None:
        self.queued = None

    def wait_one(self):
        unit, deps = self.queued
        self.queued = None
        try:
            return unit.key, True, self.study.run_unit(unit, deps)
        except Exception as err:  # noqa: BLE001 — listed with the others; KeyboardInterrupt stops everything
            return unit.key, False, err


def _import_ray():
    try:
        import ray
    except ImportError as err:
        raise ImportError(
            "executor='ray' needs Ray: pip install 'geoviz[ray]' (or pip install ray), or use executor='local'"
        ) from err
    return ray


class _Ray:
    """One Ray task per unit; Ray queues them by the resources they ask for."""

    def __init__(self, study, execution: Execution):
        ray = self.ray = _import_ray()
        if not ray.is_initialized():
            ray.init(address=execution.address, include_dashboard=False)
        self.nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        has_gpus = any(r.get("GPU", 0) > 0 for r in self.nodes)
        default_gpus = execution.gpus_per_run if execution.gpus_per_run is not None else study.gpus_per_run
        self.gpus = (lambda u: u.gpus if u.gpus is not None else default_gpus) if has_gpus else (lambda u: 0)
        self.execution = execution
        self.spec = ray.put(study.worker_spec())
        # a process that started CUDA keeps its device whatever Ray assigns next: a fresh process per GPU task
        self.tasks = {False: ray.remote(run_unit_in_worker), True: ray.remote(max_calls=1)(run_unit_in_worker)}
        self.in_flight: dict = {}

    def check(self, units: list[RunUnit]) -> None:
        """Refuse units no node can hold (Ray would queue them for ever)."""
        cpus = self.execution.cpus_per_run

        def fits(u, node):
            return node.get("CPU", 0) >= cpus and node.get("GPU", 0) >= self.gpus(u)

        too_big = [u for u in units if not any(fits(u, node) for node in self.nodes)]
        if too_big:
            largest = ", ".join(f"{r.get('CPU', 0):g} CPUs and {r.get('GPU', 0):g} GPUs" for r in self.nodes)
            u = too_big[0]
            raise ValueError(
                f"{len(too_big)} runs (the first: {u.key!r}, {cpus:g} CPUs and {self.gpus(u):g} GPUs) fit on no "
                f"node of this Ray cluster (its nodes: {largest}): lower --cpus-per-run / --gpus-per-run, or add nodes"
            )

    def busy(self) -> bool:
        return bool(self.in_flight)

    def has_room(self) -> bool:
        return True

    def submit(self, unit: RunUnit, deps: dict) -> None:
        ex, gpus = self.execution, self.gpus(unit)
        ref = (
            self.tasks[gpus > 0]
            .options(
                name=unit.key,  # the worker's process title while it runs: ray::<key>
                num_cpus=ex.cpus_per_run,
                num_gpus=gpus,
                max_retries=ex.max_retries,
                retry_exceptions=False,  # a Python error would only repeat; a dead worker is retried
            )
            .remote(self.spec, unit, deps, max(1, int(ex.cpus_per_run)))
        )
        self.in_flight[ref] = unit.key

    def close(self) -> None:
        """Cancel what still runs (only after an interruption: normally nothing is in flight)."""
        for ref in self.in_flight:
            self.ray.cancel(ref, force=True)
        self.in_flight.clear()

    def wait_one(self):
        (ref,), _ = self.ray.wait(list(self.in_flight), num_returns=1)
        key = self.in_flight.pop(ref)
        try:
            return key, True, self.ray.get(ref)
        except Exception as err:  # noqa: BLE001 — a failed task: listed, its dependents not started
            return key, False, err


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to rebuild a study: its class, config, runs root (absolute), reuse mode, the
    driver's code fingerprint (a worker running other code refuses) and the driver's study folder (a
    worker that resolves another one, e.g. another data set for ``dataset="auto"``, refuses)."""

    cls: type
    cfg: Any
    root: str
    reuse: str
    fingerprint: dict
    experiment: str | None = None


_WORKER_STUDY: dict = {}  # one prepared study per worker process (data and teacher loaded once)


def run_unit_in_worker(spec: WorkerSpec, unit: RunUnit, deps: dict, threads: int):
    """A Ray task: rebuild the study once per worker process (``Study.for_worker``), run one unit."""
    import torch

    from ..runs import code_fingerprint, config_hash, describe_code, reuse_policy, stale_reasons

    torch.set_num_threads(threads)
    reasons = stale_reasons(spec.fingerprint)
    if reasons:
        raise RuntimeError(
            f"this worker (pid {os.getpid()}) runs other code than the driver: {'; '.join(reasons)}. The driver runs "
            f"{describe_code(spec.fingerprint)}, this worker {describe_code(code_fingerprint())}: install the same "
            "geoviz on every node (or ship it with Ray's runtime_env)"
        )
    key = (spec.cls.__module__, spec.cls.__qualname__, config_hash(spec.cfg, 16), spec.root, spec.reuse)
    if key not in _WORKER_STUDY:
        _WORKER_STUDY.clear()  # one study at a time: its data and teacher are the worker's memory
        study = spec.cls.for_worker(spec.cfg, spec.root, spec.reuse)
        mine = study.exp.name if study.exp is not None else None
        if spec.experiment is not None and mine != spec.experiment:
            raise RuntimeError(
                f"this worker (pid {os.getpid()}) resolves the study's folder as {mine!r}, the driver as "
                f"{spec.experiment!r}: the same config resolves differently here (a data set under data/ on one "
                "machine and not on the other?); give every node the same data/, or name the data set in the config"
            )
        _WORKER_STUDY[key] = study
    with reuse_policy(spec.reuse):
        return _WORKER_STUDY[key].run_unit(unit, deps)
