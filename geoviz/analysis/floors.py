"""Floors: how far a task can be solved without the invariant it is meant to test, or without a network.

A network's accuracy on a shape task means something only above what simple statistics of the
drawing already give. ``mask_statistics`` measures, from the binary foreground mask of each
image, its area, perimeter, bounding box, centroid and normalised second central moments (plus
any per-image extras, such as the inside/outside dot's position); ``shortcut_floor`` fits a
gradient-boosted classifier (scikit-learn's ``HistGradientBoostingClassifier``) on them and scores
it on held-out images. None of these statistics counts holes or parts, so a task whose floor is
near chance needs its topology, not its pixel budget.

``panel_floor`` is *the* floor of every study: a panel of cheap feature sets (downsampled pixels,
colour histograms, the whole-image statistics, orderless texture statistics from scikit-image —
LBP at three radii, GLCM properties, gradient-magnitude and LoG histograms, top-hats, local
contrast — and for shape tasks the mask and dot-position statistics) × classifiers (standardised
logistic regression, gradient boosting, a random forest, nearest neighbours); the member is chosen
by stratified cross-validation on the training images alone, refitted on them and scored on every
test set; the panel's cross-validation table is kept beside the floor. A sceptic with a cheap
model should not beat it. ``pixel_floor`` is the same panel for a folder of the user's images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

STATISTICS = (
    "area",
    "perimeter",
    "bbox_y0",
    "bbox_y1",
    "bbox_x0",
    "bbox_x1",
    "bbox_h",
    "bbox_w",
    "centroid_y",
    "centroid_x",
    "mu20",
    "mu02",
    "mu11",
)


def mask_statistics(images: torch.Tensor, extras: np.ndarray | None = None, threshold: float = 0.5) -> np.ndarray:
    """(n, 13 [+ extras]) float64: the ``STATISTICS`` of each image's foreground mask.

    ``images`` (n, C, H, W) in [0, 1] (or uint8 in [0, 255]); channels are averaged. Perimeter is
    the number of foreground pixels with a background 4-neighbour (or on the border); moments are
    central and divided by the area (pixel² units). An empty mask gives zeros.
    """
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    m = (x.mean(dim=1) > threshold).float()  # (n, H, W)
    n, H, W = m.shape
    area = m.sum(dim=(1, 2))
    pad = torch.nn.functional.pad(m, (1, 1, 1, 1))
    interior = pad[:, :-2, 1:-1] * pad[:, 2:, 1:-1] * pad[:, 1:-1, :-2] * pad[:, 1:-1, 2:]
    perimeter = (m * (1 - interior)).sum(dim=(1, 2))
    ys = torch.arange(H, dtype=torch.float32)
    xs = torch.arange(W, dtype=torch.float32)
    rows, cols = m.amax(dim=2) > 0, m.amax(dim=1) > 0  # (n, H), (n, W)
    big = float(max(H, W))

    def span(mask, coord):
        lo = torch.where(mask, coord, big).amin(dim=1)
        hi = torch.where(mask, coord, -1.0).amax(dim=1)
        return lo, hi

    y0, y1 = span(rows, ys)
    x0, x1 = span(cols, xs)
    safe = area.clamp_min(1)
    cy = (m.sum(dim=2) * ys).sum(dim=1) / safe
    cx = (m.sum(dim=1) * xs).sum(dim=1) / safe
    dy = ys[None, :, None] - cy[:, None, None]
    dx = xs[None, None, :] - cx[:, None, None]
    mu20 = (m * dy**2).sum(dim=(1, 2)) / safe
    mu02 = (m * dx**2).sum(dim=(1, 2)) / safe
    mu11 = (m * dx * dy).sum(dim=(1, 2)) / safe
    stats = torch.stack([area, perimeter, y0, y1, x0, x1, y1 - y0 + 1, x1 - x0 + 1, cy, cx, mu20, mu02, mu11], 1)
    stats = torch.where((area > 0)[:, None], stats, torch.zeros_like(stats))
    out = stats.double().numpy()
    if extras is not None:
        extras = np.asarray(extras, dtype=np.float64).reshape(n, -1)
        extras = extras[:, ~np.isnan(extras).all(axis=0)]  # a task without a dot has no dot column
        out = np.concatenate([out, extras, _polar(extras, out[:, 9] + 0.5, out[:, 8] + 0.5)], axis=1)
    return out


IMAGE_STATISTICS = (
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
    "grey_p1",
    "grey_p5",
    "grey_p50",
    "grey_p95",
    "grey_p99",
    "gradient_mean",
    "gradient_p99",
    *(f"hist_{k}" for k in range(16)),
)


def image_statistics(images: torch.Tensor) -> np.ndarray:
    """(n, 29) float64: simple statistics of whole images — per-channel mean and contrast (std),
    grey-level percentiles, mean and 99th-percentile gradient magnitude, a 16-bin grey histogram
    of the image's own range. A texture task whose floor on these is near chance needs the
    defect's shape, not its brightness or its contrast."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    n = len(x)
    grey = x.mean(1)
    flat = grey.reshape(n, -1)
    pct = torch.quantile(flat, torch.tensor([0.01, 0.05, 0.5, 0.95, 0.99]), dim=1).T
    gy, gx = grey[:, 1:, :-1] - grey[:, :-1, :-1], grey[:, :-1, 1:] - grey[:, :-1, :-1]
    grad = (gx**2 + gy**2).sqrt().reshape(n, -1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    bins = ((flat - lo) / (hi - lo).clamp_min(1e-6) * 16).long().clamp(0, 15)
    hist = torch.zeros(n, 16).scatter_add_(1, bins, torch.ones_like(flat)) / flat.shape[1]
    cols = [
        x.mean((2, 3)),
        x.std((2, 3)),
        pct,
        grad.mean(1, keepdim=True),
        torch.quantile(grad, 0.99, dim=1)[:, None],
        hist,
    ]
    return torch.cat(cols, 1).double().numpy()


def texture_statistics(images: torch.Tensor) -> np.ndarray:
    """(n, 131) float64: orderless texture statistics of the grey image (no positions):
    uniform LBP histograms at radii 1, 2, 3 (8 neighbours each, 10 bins); GLCM contrast,
    dissimilarity, homogeneity, energy, correlation and ASM at distances 1, 2, 4 (32 grey levels,
    mean and spread over 4 directions); a 16-bin gradient-magnitude histogram (Sobel, fixed bins)
    with its mean and std, per image; LoG responses at σ = 1, 2, 4 (mean |·|, std, 5th and 95th percentile);
    white and black top-hats (3 × 3 and 7 × 7: mean, 95th percentile); local contrast (5 × 5 std:
    mean, 5th, 95th percentile); 8-bin histograms per colour channel."""
    from scipy import ndimage
    from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

    x = images.float() / (255.0 if images.dtype == torch.uint8 else 1.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = x.clamp(0, 1)
    grey = x.mean(1).double().numpy()  # (n, H, W)
    g8 = np.round(grey * 255).astype(np.uint8)
    per_image, sob = [], []
    for g, image in zip(g8, grey):
        # every filter on one image at a time (scipy's filters on the (n, H, W) stack would smooth
        # across neighbouring images too)
        sob.append(np.hypot(ndimage.sobel(image, axis=0), ndimage.sobel(image, axis=1)).ravel())
        cols = []
        for r in (1, 2, 3):
            lbp = local_binary_pattern(g, 8, r, "uniform")
            cols.append(np.bincount(lbp.astype(int).ravel(), minlength=10)[:10] / lbp.size)
        glcm = graycomatrix(g // 8, [1, 2, 4], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=32, normed=True)
        for prop in ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM"):
            v = np.nan_to_num(graycoprops(glcm, prop))  # (distances, angles); a flat image has no correlation
            cols += [v.mean(1), v.max(1) - v.min(1)]
        per_image.append(np.concatenate(cols))
    sob = np.stack(sob)  # Sobel magnitudes of an image in [0, 1] lie in [0, 4√2]
    hist = np.stack([np.histogram(v, bins=16, range=(0, 4 * np.sqrt(2)))[0] for v in sob]) / sob.shape[1]
    stats = [hist, sob.mean(1)[:, None], sob.std(1)[:, None]]
    for sigma in (1, 2, 4):
        # per image: the second derivatives along rows and columns only (gaussian_laplace on the
        # stack would add the image axis's "derivative" at σ = 0, the image itself)
        log = sum(ndimage.gaussian_filter(grey, (0, sigma, sigma), order=o) for o in ((0, 2, 0), (0, 0, 2)))
        log = log.reshape(len(grey), -1)
        stats.append(np.stack([np.abs(log).mean(1), log.std(1), *np.percentile(log, [5, 95], axis=1)], 1))
    for size in (3, 7):
        white = (grey - ndimage.grey_opening(grey, size=(1, size, size))).reshape(len(grey), -1)
        black = (ndimage.grey_closing(grey, size=(1, size, size)) - grey).reshape(len(grey), -1)
        stats.append(
            np.stack([white.mean(1), np.percentile(white, 95, 1), black.mean(1), np.percentile(black, 95, 1)], 1)
        )
    mean = ndimage.uniform_filter(grey, (0, 5, 5))
    local = np.sqrt(np.maximum(ndimage.uniform_filter(grey**2, (0, 5, 5)) - mean**2, 0)).reshape(len(grey), -1)
    stats.append(np.stack([local.mean(1), *np.percentile(local, [5, 95], axis=1)], 1))
    idx = (x * 8).long().clamp(max=7).flatten(2)  # (n, 3, HW)
    colour = torch.zeros(len(x), 3, 8).scatter_add_(2, idx, torch.ones_like(idx, dtype=torch.float32)) / idx.shape[2]
    stats.append(colour.reshape(len(x), -1).double().numpy())
    return np.concatenate([np.stack(per_image), *stats], 1)


def _polar(dots: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Each dot's distance from the mask's centroid and direction (cos, sin), and for two dots
    their distance and the angle between their directions (cos, sin): a classifier gets the dots'
    polar positions ready-made (from raw x, y it would have to learn them)."""
    if dots.shape[1] == 0 or dots.shape[1] % 2:
        return np.zeros((len(dots), 0))
    cols, ang = [], []
    for k in range(0, dots.shape[1], 2):
        dx, dy = dots[:, k] - cx, dots[:, k + 1] - cy
        a = np.arctan2(dy, dx)
        cols += [np.hypot(dx, dy), np.cos(a), np.sin(a)]
        ang.append(a)
    if len(ang) == 2:
        cols += [
            np.hypot(dots[:, 2] - dots[:, 0], dots[:, 3] - dots[:, 1]),
            np.cos(ang[1] - ang[0]),
            np.sin(ang[1] - ang[0]),
        ]
    return np.stack(cols, 1)


def shortcut_floor(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *, seed: int = 0
) -> float:
    """Held-out accuracy of a gradient-boosted classifier on the statistics: the shortcut floor."""
    return shortcut_floors(train_x, train_y, {"test": (test_x, test_y)}, seed=seed)["test"]


def shortcut_floors(train_x: np.ndarray, train_y: np.ndarray, tests: dict, *, seed: int = 0) -> dict:
    """One classifier fitted on the training statistics, scored on each ``tests[name] = (x, y)``:
    the floor a network trained on the same distribution must beat on every test set (a transfer
    set's floor is what the shortcut carries over to it)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=seed)
    clf.fit(train_x, train_y)
    return {name: float(clf.score(x, y)) for name, (x, y) in tests.items()}


def _pixels(images: torch.Tensor, side: int) -> np.ndarray:
    x = images.float() / (255.0 if images.dtype == torch.uint8 else 1.0)
    x = torch.nn.functional.interpolate(x, size=(side, side), mode="area")
    return x.reshape(len(x), -1).double().numpy()


def _colour_histograms(images: torch.Tensor, bins: int = 16) -> np.ndarray:
    x = images.float() / (255.0 if images.dtype == torch.uint8 else 1.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    idx = (x.clamp(0, 1) * bins).long().clamp(max=bins - 1).flatten(2)  # (n, 3, HW)
    hist = torch.zeros(len(x), 3, bins).scatter_add_(2, idx, torch.ones_like(idx, dtype=torch.float32))
    return (hist / idx.shape[2]).reshape(len(x), -1).double().numpy()


IMAGE_FEATURES = {
    "pixels 8×8": lambda x, extras=None: _pixels(x, 8),
    "pixels 16×16": lambda x, extras=None: _pixels(x, 16),
    "colour histograms": lambda x, extras=None: _colour_histograms(x),
    "image statistics": lambda x, extras=None: image_statistics(x),
    "texture statistics": lambda x, extras=None: texture_statistics(x),
}
SHAPE_FEATURES = {
    "mask and dot statistics": lambda x, extras=None: mask_statistics(x, extras),
    "pixels 8×8": IMAGE_FEATURES["pixels 8×8"],
    "texture statistics": IMAGE_FEATURES["texture statistics"],
}
PANELS = {"image": IMAGE_FEATURES, "shape": SHAPE_FEATURES}


def full_pixels(images: torch.Tensor, extras=None) -> np.ndarray:
    """Every pixel at full resolution in [0, 1]: a logistic regression on them was transfer's floor
    before the panel, so transfer's panel keeps it as a member."""
    x = images.float() / (255.0 if images.dtype == torch.uint8 else 1.0)
    return x.reshape(len(x), -1).double().numpy()


# tree ensembles and nearest neighbours on thousands of raw pixels cost minutes per fit: a linear model only
full_pixels.classifiers = ("logistic regression",)


TREE_ENSEMBLES = ("gradient boosting", "random forest")


def _classifiers(fold_train: int, seed: int, trees: bool = True) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .probes import logistic_probe

    k = max(1, min(5, fold_train))  # a fold's training part may hold fewer than 5 images
    panel = {
        "logistic regression": logistic_probe,
        # early stopping on a tenth of a large fold (the panel's slowest member otherwise); a small
        # fold's tenth may miss classes
        "gradient boosting": lambda: HistGradientBoostingClassifier(
            max_iter=100, early_stopping=fold_train >= 500, random_state=seed
        ),
        "random forest": lambda: RandomForestClassifier(200, min_samples_leaf=2, n_jobs=-1, random_state=seed),
        f"{k} nearest neighbours": lambda: make_pipeline(StandardScaler(), KNeighborsClassifier(k)),
    }
    return panel if trees else {name: make for name, make in panel.items() if name not in TREE_ENSEMBLES}


@dataclass
class Floor:
    """What a cheap model reaches on a task without any network (``panel_floor``).

    Attributes
    ----------
    accuracy : test set name → held-out accuracy of the chosen member: *the* floor there.
    correct : test set name → bool per test image (for paired tests such as McNemar's).
    features, classifier : the member chosen by cross-validation on the training images.
    cv : ``"features / classifier"`` → cross-validated training accuracy, every member of the panel.
    n_train : training images the panel saw.
    """

    accuracy: dict
    correct: dict
    features: str
    classifier: str
    cv: dict
    n_train: int

    @property
    def member(self) -> str:
        return f"{self.features} / {self.classifier}"

    def row(self) -> dict:
        """JSON-ready: the floor per test set, the member, the panel's table."""
        return {"accuracy": self.accuracy, "member": self.member, "cv": self.cv, "n_train": self.n_train}


def panel_floor(
    train_images: torch.Tensor,
    train_y,
    tests: dict,
    *,
    panel: str | dict = "image",
    train_extras=None,
    folds: int = 3,
    seed: int = 0,
    max_train: int | None = None,
    trees: bool = True,
) -> Floor:
    """The floor of a task: every feature set of ``panel`` ("image": ``IMAGE_FEATURES``, "shape":
    ``SHAPE_FEATURES`` with the dots' positions, or a dict name → ``f(images, extras)``) × every
    classifier (only those in ``f.classifiers`` where a feature set has that attribute), scored by
    stratified ``folds``-fold cross-validation **on the training images only**; the best pair is
    refitted on them and scored on each ``tests[name] = (images, y)`` or ``(images, y, extras)``.
    ``max_train``: fit on a stratified random subset of at most that many training images (a bound
    on the cost for large sets: 80 cross-validated fits; the floor is then that of the subset).
    ``trees=False`` leaves the tree ensembles out (gradient boosting and the random forest cost
    seconds per fit even on a hundred images): for smoke runs, whose floor is then weaker.
    Raises when a class has fewer than two training images."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split

    features = PANELS[panel] if isinstance(panel, str) else panel
    train_y = np.asarray(train_y)
    if max_train is not None and len(train_y) > max_train:
        keep, _ = train_test_split(np.arange(len(train_y)), train_size=max_train, stratify=train_y, random_state=seed)
        keep = np.sort(keep)
        train_images, train_y = train_images[keep], train_y[keep]
        train_extras = None if train_extras is None else np.asarray(train_extras)[keep]
    counts = np.bincount(train_y)
    k = int(min(folds, counts[counts > 0].min()))
    if k < 2 or len(counts[counts > 0]) < 2:
        raise ValueError("a floor needs two classes with at least two training images each")
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    classifiers = _classifiers(len(train_y) * (k - 1) // k, seed, trees)
    train_x = {name: f(train_images, train_extras) for name, f in features.items()}
    scores = {}
    for fname, xtr in train_x.items():
        for cname, make in classifiers.items():
            if cname not in getattr(features[fname], "classifiers", classifiers):
                continue
            # a member that fails in any fold is out (scored on the folds it survived, it could look better)
            score = float(np.mean(cross_val_score(make(), xtr, train_y, cv=cv)))
            scores[(fname, cname)] = score if np.isfinite(score) else -1.0
    fname, cname = max(scores, key=scores.get)
    clf = classifiers[cname]().fit(train_x[fname], train_y)
    correct = {}
    for name, (images, y, *extras) in tests.items():
        correct[name] = clf.predict(features[fname](images, extras[0] if extras else None)) == np.asarray(y)
    return Floor(
        {name: float(c.mean()) for name, c in correct.items()},
        correct,
        fname,
        cname,
        {f"{f} / {c}": v for (f, c), v in scores.items()},
        len(train_y),
    )


def pixel_floor(
    train_images: torch.Tensor,
    train_y,
    test_images: torch.Tensor,
    test_y,
    *,
    folds: int = 3,
    seed: int = 0,
    trees: bool = True,
) -> dict:
    """``panel_floor``'s image panel on one held-out set: ``{"accuracy", "correct" (per held-out
    image), "features", "classifier", "cv": {pair: cross-validated accuracy}}``."""
    f = panel_floor(train_images, train_y, {"test": (test_images, test_y)}, folds=folds, seed=seed, trees=trees)
    return {
        "accuracy": f.accuracy["test"],
        "correct": f.correct["test"],
        "features": f.features,
        "classifier": f.classifier,
        "cv": f.cv,
    }
