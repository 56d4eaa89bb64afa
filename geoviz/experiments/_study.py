"""The study base: what every runner does before and around its own steps, and the result contract.

A study is a ``Study`` subclass whose ``steps()`` reads as the list of what it does (train the
set-ups, code, measure, decide); ``execute()`` runs them with the run policy in force. The base

- resolves the device (``cfg.device``), checks the reuse mode before anything is written;
- opens the experiment's run folder (``open_run``): the config is written, the code fingerprint
  checked (a run made by other code is refused unless ``reuse="stale-ok"``; ``reuse="fresh"``
  starts over), the study, device and seeds recorded, and a reused run announced with the code
  that made it;
- trains one arm (``fit_arm``: seeded, in its own run folder, its history kept under ``(arm, seed)``);
- hands its runs to an executor (``run_units``, ``executors.py``) when it lists them as units: a study
  that does so writes ``units()``, ``run_name()``, ``_setup()`` (the data its runs share; the base's
  ``prepare`` and ``prepare_worker`` call it) and either ``measure_unit(unit, deps)`` (train one run in
  folder ``unit.key`` and return its row, which the base keeps in the run's summary and reads back:
  ``unit_row``) or its own ``run_unit`` / ``unit_done``; it sets ``gpus_per_run``.

Every study's result follows one contract (``StudyResult``): ``claims()`` a list of
``analysis.statistics.Claim``, ``table()`` tidy rows, ``curves()`` keyed by ``(arm, seed)``,
``floors`` and ``provenance``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

from .._utils import resolve_device, seed_everything
from ..analysis.statistics import Claim, claim_rows
from ..runs import RunDir, code_fingerprint, reuse_mode, reuse_policy
from .executors import Execution, RunUnit, UnitsReport, WorkerSpec, run_units

if TYPE_CHECKING:
    from typing_extensions import Unpack

UNIT_ROW = "unit_row"  # where a unit's row is kept in its run's summary (``Study.unit_row``)
UNIT_NEEDS = "unit_needs"  # beside it: the digest of the results it was made from (``needs_digest``)


def needs_digest(deps: dict) -> str:
    """A digest of the results a unit is made from: each needed unit's row (not its curve, whose wall
    times are its own), a needed file by its folder, name and contents (not where the runs root is mounted)."""

    def _part(value):
        if isinstance(value, dict) and "row" in value:
            return value["row"]
        if isinstance(value, str) and Path(value).is_file():
            return ["/".join(Path(value).parts[-2:]), _file_digest(value, *_stamp(value))]
        return value

    text = json.dumps({k: _part(v) for k, v in sorted(deps.items())}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _stamp(path: str) -> tuple[int, int]:
    st = Path(path).stat()
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:  # the stamp in the key: hashed again when it changed
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:16]


class ExecutionOptions(TypedDict, total=False):
    """How a study runner carries out the study's runs (``executors.Execution``): ``executor`` "local"
    (default) or "ray", Ray's ``address``, each run's ``gpus_per_run`` and ``cpus_per_run``."""

    executor: str
    address: str | None
    gpus_per_run: float | None
    cpus_per_run: float


def seeds_of(cfg) -> list[int]:
    """The seeds a config runs: ``cfg.seeds`` where it has them, else ``[cfg.seed]``."""
    return list(getattr(cfg, "seeds", None) or [getattr(cfg, "seed", 0)])


class Study:
    """One run of a study: subclasses set ``key`` (the study's name in ``runs/`` and ``geoviz runs``)
    and write ``steps()``; callers use ``execute()``.

    Attributes
    ----------
    cfg : the study's frozen config.
    device : the torch device resolved from ``cfg.device``.
    run_root : where the run folder goes (None: ``runs/``).
    progress : whether tqdm bars are shown.
    reuse : "current" (default), "stale-ok" or "fresh" (see ``geoviz.runs.reuse_mode``).
    execution : how its runs are carried out (``executors.Execution``: local or Ray).
    exp : the experiment's ``RunDir`` once ``open_run`` was called.
    histories : ``{(arm, seed): [per-epoch records]}`` of every arm trained with ``fit_arm``.
    units_report : what ``run_units`` did (runs run now, runs read back), once it was called.
    """

    key: ClassVar[str] = "study"
    gpus_per_run: ClassVar[float] = 1.0  # a unit's GPU share under Ray unless the unit or the caller says

    def __init__(
        self, cfg, *, run_root=None, progress: bool = True, reuse: str | None = None, execution: Execution | None = None
    ):
        self.cfg, self.run_root, self.progress = cfg, run_root, progress
        self.reuse = reuse_mode(reuse)
        self.execution = execution or Execution()
        if self.execution.executor != "local" and type(self).units is Study.units:
            raise ValueError(
                f"study {self.key!r} does not list its runs as units: executor {self.execution.executor!r} "
                "cannot hand them out; use executor='local'"
            )
        self.device = resolve_device(getattr(cfg, "device", "auto"))
        self.exp: RunDir | None = None
        self.histories: dict[tuple[str, int], list[dict]] = {}
        self.units_report: UnitsReport | None = None

    @classmethod
    def launch(
        cls,
        cfg,
        *,
        run_root=None,
        progress: bool = True,
        reuse: str | None = None,
        **execution: Unpack[ExecutionOptions],
    ) -> Any:
        """What a study's runner does: the study with these options, executed (``execute``)."""
        return cls(cfg, run_root=run_root, progress=progress, reuse=reuse, execution=Execution(**execution)).execute()

    def steps(self) -> Any:
        raise NotImplementedError

    def run_name(self) -> str:
        """The study's folder under the runs root (from its config hash)."""
        raise NotImplementedError

    def _setup(self) -> None:
        """Data and networks the study's runs share (no training, nothing written)."""

    def prepare(self) -> None:
        """``_setup`` (checked before anything is written), then the run folder."""
        self._setup()
        self.open_run(self.run_name())

    def execute(self) -> Any:
        """``steps()`` with this study's reuse mode in force for every run folder it opens; the
        experiment's run is marked finished when they all went through."""
        with reuse_policy(self.reuse):
            result = self.steps()
        if self.units_report is not None and isinstance(result, StudyResult):
            result.execution = self.units_report.as_dict()
        if self.exp is not None:
            self.exp.write_summary()
        return result

    def open_run(self, name: str, config: dict | None = None) -> RunDir:
        """The experiment's folder ``runs/<name>/``: config (``cfg``, or ``config`` where a study
        records more) written, code checked, provenance recorded."""
        self.exp = RunDir(name, self.run_root, reuse=self.reuse)
        self.exp.write_config(self.cfg if config is None else config)
        self.exp.record(study=self.key, device=str(self.device), seeds=seeds_of(self.cfg))
        note = self.exp.describe_reuse()
        if note:
            print(note)
        return self.exp

    def arm_run(self, name: str, parent: RunDir | None = None) -> RunDir:
        """A run folder inside the experiment's (or ``parent``'s)."""
        return RunDir(name, (parent or self.exp).path, reuse=self.reuse)

    def fit_arm(
        self,
        arm: str,
        seed: int,
        build,
        train,
        val,
        *,
        name: str | None = None,
        parent: RunDir | None = None,
        **fit_kwargs,
    ):
        """Seed, build the arm's network (``build()``), train it with ``engine.fit`` in run folder
        ``name`` (default ``<arm>-s<seed>``), keep its history under ``(arm, seed)``; returns
        ``(model, FitResult)``."""
        from ..engine import fit

        seed_everything(seed)
        model = build()
        res = fit(
            model,
            train,
            val,
            device=self.device,
            run=self.arm_run(name or f"{arm}-s{seed}", parent),
            seed=seed,
            progress=fit_kwargs.pop("progress", False),
            **fit_kwargs,
        )
        self.histories[(arm, seed)] = res.history
        return model, res

    # runs as units (executors.py) -------------------------------------------------------------
    def units(self) -> list[RunUnit]:
        """The study's runs, each after the runs it needs."""
        raise NotImplementedError(f"study {self.key!r} does not list its runs as units")

    def run_unit(self, unit: RunUnit, deps: dict) -> Any:
        """Run one unit into its folder (resuming it) and return its result, read back from the folder.
        By default: a ``pretrain`` unit's file (``pretrained_file``), else ``measure_unit`` once, its
        row kept in the run's summary (``unit_row``)."""
        if "pretrain" in unit.inputs:
            return self.pretrained_file(unit.inputs["pretrain"], train=True)
        return self.unit_row(unit, deps, train=True)

    def unit_done(self, unit: RunUnit, deps: dict) -> Any:
        """The unit's result when its folder says it finished (None: it has to run)."""
        if "pretrain" in unit.inputs:
            return self.pretrained_file(unit.inputs["pretrain"], train=False)
        return self.unit_row(unit, deps, train=False)

    def pretrained_file(self, network: str, *, train: bool) -> str | None:
        """A network pretrained once and shared by the study's runs (a unit with ``inputs={"pretrain":
        network}``, in its own folder under the runs root: ``pretrained_once``): its file; ``train=False``:
        None while it is not there."""
        raise NotImplementedError(f"study {self.key!r} pretrains nothing")

    def measure_unit(self, unit: RunUnit, deps: dict) -> dict:
        """Train (or resume) one unit's run in folder ``unit.key`` and measure it: its row (JSON-able)."""
        raise NotImplementedError(f"study {self.key!r} does not measure units")

    def unit_row(self, unit: RunUnit, deps: dict, *, train: bool) -> dict | None:
        """``{"row", "history"}`` of a unit whose run trains and is then measured (``measure_unit``): the
        row is written into the run's summary once and always read back from there, so a row measured
        now and one measured by an earlier invocation (or another process) are the same JSON values.
        ``train=False``: None unless the run finished and holds its row. A run killed after training
        but before its row was written is measured again (training is read back, not repeated). A run
        made from other results of the units it needs (one of them ran again since: ``needs_digest``)
        is not reused: with ``train`` its folder is emptied and it runs again."""
        run, digest = self.arm_run(unit.key), needs_digest(deps)
        m = run.read_metrics()
        done = m["status"] == "finished" and UNIT_ROW in m["summary"]
        if done and m["summary"].get(UNIT_NEEDS, digest) != digest:
            if not train:
                return None
            print(f"run {run.path} was made from other results of {', '.join(unit.needs)} (run again since): again")
            shutil.rmtree(run.path)
            run, done = self.arm_run(unit.key), False
        if not done:
            if not train:
                return None
            row = self.measure_unit(unit, deps)
            run.write_summary(**{UNIT_ROW: row, UNIT_NEEDS: digest})
            m = run.read_metrics()  # as JSON gives it back (tuples as lists, numpy scalars as floats)
        return {"row": m["summary"][UNIT_ROW], "history": m["epochs"]}

    def prepare_worker(self) -> None:
        """What a worker process sets up before its first unit: ``_setup`` and the driver's run folder
        (nothing written, no training)."""
        self._setup()
        self.exp = RunDir(self.run_name(), self.run_root, reuse=self.reuse)

    def run_units(self) -> UnitsReport:
        """Every unit of ``units()`` carried out by ``self.execution``; the report is kept."""
        self.units_report = run_units(self, self.units(), self.execution, progress=self.progress)
        return self.units_report

    def worker_spec(self) -> WorkerSpec:
        """What a Ray worker needs to rebuild this study (the runs root as an absolute path)."""
        root = self.exp.root if self.exp is not None else self.run_root
        # "fresh" goes to the workers as it is: a worker opens the study's folder (the driver made it current),
        # the teacher's (run by the current code before any student) and its own run's, which no other task opens
        name = self.exp.name if self.exp is not None else None
        return WorkerSpec(type(self), self.cfg, str(root), self.reuse, code_fingerprint(), name)

    @classmethod
    def for_worker(cls, cfg, root: str, reuse: str) -> Study:
        """The study as a worker process rebuilds it (``prepare_worker`` done)."""
        study = cls(cfg, run_root=root, progress=False, reuse=reuse)
        with reuse_policy(reuse):
            study.prepare_worker()
        return study


class StudyResult:
    """The contract every study's result keeps. Subclasses (dataclasses) provide ``claims()`` and
    ``table()``, and set ``experiment`` (the run's ``RunDir``), ``floors`` and ``histories``
    (keyed by ``(arm, seed)``) where they have them. ``execution`` is what the executor did (a
    study whose runs are units: executor, number of runs, keys run now, keys read back; else empty)."""

    experiment: RunDir | None = None
    execution: dict | None = None

    def execution_text(self) -> str:
        """ "21 runs (local): 3 ran, 18 reused" (empty where the study's runs are not units)."""
        e = self.execution
        return f"{e['runs']} runs ({e['executor']}): {len(e['ran'])} ran, {len(e['reused'])} reused" if e else ""

    def claims(self) -> list[Claim]:
        """The study's claims, each decided (or left undecided) with its interval and unit."""
        raise NotImplementedError

    def table(self) -> list[dict]:
        """Tidy rows: one per arm / setting, means over seeds where there are seeds."""
        raise NotImplementedError

    def curves(self) -> dict[tuple[str, int], list[dict]]:
        """Per-epoch records of every trained arm, keyed by ``(arm, seed)``."""
        return dict(getattr(self, "histories", None) or {})

    def curves_of(self, seed: int) -> dict[str, list[dict]]:
        """``curves()`` of one seed, keyed by arm (what a convergence figure draws)."""
        return {arm: h for (arm, s), h in self.curves().items() if s == seed}

    @property
    def provenance(self) -> dict:
        """The code fingerprint, device and seeds recorded in the run's ``metrics.json``."""
        return self.experiment.read_metrics().get("provenance", {}) if self.experiment is not None else {}

    def summary(self) -> dict:
        """What ``save_metrics`` writes: the table and the claims as rows."""
        return {"table": self.table(), "claims": claim_rows(self.claims())}

    def save_metrics(self) -> dict:
        """Write ``summary()`` into the experiment's ``metrics.json`` and return what was written."""
        return self.experiment.write_summary(**self.summary())["summary"] if self.experiment else self.summary()
