"""Ready-made experiments: a frozen config (profiles smoke / quick / full) and a runner that
trains, measures and returns a result keeping one contract (``_study.StudyResult``: ``claims()``,
``table()``, ``curves()``, ``floors``, ``provenance``). Each runner is a ``_study.Study`` whose
``steps()`` lists what it does. Notebooks and ``geoviz`` CLI commands call these."""

# study name → (module, config class, runner): what `geoviz study NAME` runs
STUDIES = {
    "transfer": ("transfer", "TransferConfig", "run_transfer"),
    "angles": ("angles", "AnglesConfig", "run_angles"),
    "probes": ("probes", "ProbesConfig", "run_probes"),
    "keypoints": ("keypoints", "KeypointsConfig", "run_keypoints"),
    "pruning": ("pruning", "PruningConfig", "run_pruning"),
    "students": ("students", "StudentsConfig", "run_students"),
    "ensembles": ("ensembles", "EnsemblesConfig", "run_ensembles"),
    "cnnmda": ("cnnmda", "CnnmdaConfig", "run_cnnmda"),
}


def study_runner(name: str):
    """``(config class, runner)`` of study ``name``; every runner takes ``executor=`` (and the other
    ``_study.ExecutionOptions``): its runs are units, carried out locally or as Ray tasks (``executors.py``)."""
    import importlib

    from .._utils import unknown_name_message

    if name not in STUDIES:
        raise KeyError(unknown_name_message("study", name, sorted(STUDIES)))
    module, config, runner = STUDIES[name]
    mod = importlib.import_module(f"{__name__}.{module}")
    return getattr(mod, config), getattr(mod, runner)


def train_val_probe(cfg):
    """Seed everything, then ``cfg``'s device and its data set's training, validation and held-out
    (test split, ``cfg.n_images``) sets: what a train-then-look runner starts from."""
    from .._utils import resolve_device, seed_everything
    from ..datasets import get_dataset

    seed_everything(cfg.seed)
    data = [
        get_dataset(cfg.dataset, split, n=n, seed=cfg.seed)
        for split, n in (("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_images))
    ]
    return resolve_device(cfg.device), *data


def pretrained_once(
    arch: str,
    num_classes: int,
    make_data,
    *,
    name: str,
    settings: dict,
    epochs: int,
    lr: float,
    batch_size: int,
    device,
    run_root=None,
    train: bool = True,
) -> str | None:
    """Train zoo network ``arch`` on a source task once and cache it under ``runs/<name>-<hash of
    settings>/model.pt`` (``make_data()`` → (train, val), called only when training); returns the
    file, from which ``models.load_backbone`` starts a fine-tuning (``train=False``: None when it
    is not there yet)."""
    from .._utils import seed_everything
    from ..engine import fit
    from ..models import build_model, save_model
    from ..runs import RunDir, config_hash

    key = dict(
        settings, arch=arch, num_classes=num_classes, epochs=epochs, lr=lr, batch_size=batch_size, device=str(device)
    )
    run = RunDir(f"{name}-{arch.replace(':', '_')}-{config_hash(key)}", run_root)
    path = run.path / "model.pt"
    if not path.is_file():
        if not train:
            return None
        seed_everything(1234)
        model = build_model(arch, num_classes)
        train, val = make_data()
        fit(
            model,
            train,
            val,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            device=device,
            run=run,
            seed=1234,
            progress=False,
        )
        save_model(model, path)
    return str(path)
