"""Loss terms for ``engine.fit``: each wraps one loss, says which layers it needs, and has a weight.

A term is built from a spec — a name, or a dict as written in a YAML config::

    {"name": "geometric", "weight": 1.0, "kind": "affinity_kl", "pairs": {"layer2": "layer2"}}

``pairs`` maps student module paths to teacher module paths. The engine captures those layers,
calls ``setup`` once with example activations (so a term can size its own parameters, e.g.
FitNet's regressors), then adds ``weight * term(inputs)`` to the loss at each step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._utils import check_number, choice, unknown_name_message
from . import distill
from .angular import PAIRS, ical_loss
from .geometric import DEFAULT_KIND, LocalGeometryLoss


@dataclass
class TermInputs:
    """What a term sees in one step. With unlabelled data in the batch, ``logits`` and the layers
    cover every image and ``targets`` only the first ``len(targets)`` (the labelled ones): terms
    that need labels use ``labelled_logits``, teacher terms act on every image."""

    logits: torch.Tensor
    targets: torch.Tensor
    feats: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_logits: torch.Tensor | None = None
    teacher_feats: dict[str, torch.Tensor] = field(default_factory=dict)
    model: nn.Module | None = None  # the student itself (terms on its weights, e.g. ICAL)

    @property
    def labelled_logits(self) -> torch.Tensor:
        return self.logits[: len(self.targets)]


class Term(nn.Module):
    name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = False
    needs_pairs: ClassVar[bool] = False
    default_weight: ClassVar[float] = 1.0

    def __init__(self, weight: float | None = None, pairs: dict[str, str] | None = None):
        super().__init__()
        check_number("weight", weight, low=0, allow_none=True)
        if pairs is not None and not isinstance(pairs, dict):
            raise TypeError(f"pairs must map student layers to teacher layers ({{'layer2': 'layer2'}}), got {pairs!r}")
        self.weight = float(self.default_weight if weight is None else weight)
        self.pairs = dict(pairs or {})
        if self.needs_pairs and not self.pairs:
            raise ValueError(f"term {self.name!r} needs layer pairs: pairs={{'student.layer': 'teacher.layer', ...}}")

    @property
    def student_layers(self) -> tuple[str, ...]:
        return tuple(self.pairs)

    @property
    def teacher_layers(self) -> tuple[str, ...]:
        return tuple(self.pairs.values())

    def setup(self, feats: dict[str, torch.Tensor], teacher_feats: dict[str, torch.Tensor]) -> None:
        """Called once before training with example activations."""

    def pair_losses(self, inp: TermInputs, fn) -> torch.Tensor:
        return sum(fn(inp.feats[s], inp.teacher_feats[t]) for s, t in self.pairs.items()) / len(self.pairs)

    def spec(self) -> dict:
        return {"name": self.name, "weight": self.weight, **({"pairs": self.pairs} if self.pairs else {})}


class CrossEntropy(Term):
    name = "ce"

    def __init__(self, weight=None, label_smoothing: float = 0.0):
        super().__init__(weight)
        self.label_smoothing = check_number("label_smoothing", label_smoothing, low=0, high=1, high_open=True)

    def forward(self, inp: TermInputs) -> torch.Tensor:
        return F.cross_entropy(inp.labelled_logits.float(), inp.targets, label_smoothing=self.label_smoothing)

    def spec(self):
        return {**super().spec(), "label_smoothing": self.label_smoothing}


class Reconstruction(Term):
    """Mean squared error between the model's output and its input (``fit(objective="reconstruction")``)."""

    name = "reconstruction"

    def forward(self, inp):
        return F.mse_loss(inp.logits.float(), inp.targets.float())


class MSE(Term):
    """Mean squared error between a regressor's first output and the (real-valued) targets
    (``fit(objective="regression")``; pseudo-labels from a teacher are targets like any other)."""

    name = "mse"

    def forward(self, inp):
        pred = inp.labelled_logits.float()
        return F.mse_loss(pred.reshape(len(pred), -1)[:, 0], inp.targets.float())


class CodeL1(Term):
    """L1 penalty on an autoencoder's code: the mean absolute value of ``model.last_code``."""

    name = "code_l1"
    default_weight = 1e-3

    def forward(self, inp):
        code = getattr(inp.model, "last_code", None)
        if code is None:
            raise ValueError("the code_l1 term needs a model that keeps its last code in .last_code (SparseKeypointAE)")
        return code.abs().mean()


class KD(Term):
    name = "kd"
    needs_teacher = True

    def __init__(self, weight=None, T: float = 4.0):
        super().__init__(weight)
        self.T = check_number("T", T, low=0, low_open=True)

    def forward(self, inp):
        return distill.kd_loss(inp.logits, inp.teacher_logits, self.T)

    def spec(self):
        return {**super().spec(), "T": self.T}


class Geometric(Term):
    name = "geometric"
    needs_teacher = needs_pairs = True

    def __init__(
        self,
        weight=None,
        pairs=None,
        kind: str = DEFAULT_KIND,
        k: int = 8,
        m: int | None = 256,
        align: str = "pool",
        affinity: str = "gaussian",
        tau: float = 0.1,
        scope: str = "batch",
        bandwidth: str = "global",
        perplexity: float = 10.0,
    ):
        super().__init__(weight, pairs)
        check_number("k", k, low=1, integer=True)
        check_number("m", m, low=3, integer=True, allow_none=True)
        check_number("tau", tau, low=0, low_open=True)
        check_number("perplexity", perplexity, low=1, low_open=True)
        self.loss = LocalGeometryLoss(kind, k, m, align, affinity, tau, scope, bandwidth, perplexity)

    def forward(self, inp):
        return self.pair_losses(inp, self.loss)

    def spec(self):
        l = self.loss
        return {
            **super().spec(),
            "kind": l.kind,
            "k": l.k,
            "m": l.m,
            "align": l.align,
            "affinity": l.affinity,
            "tau": l.tau,
            "scope": l.scope,
            "bandwidth": l.bandwidth,
            "perplexity": l.perplexity,
        }


class FitNetTerm(Term):
    name = "fitnet"
    needs_teacher = needs_pairs = True
    default_weight = 100.0

    def setup(self, feats, teacher_feats):
        self.hints = nn.ModuleList(
            distill.FitNet(feats[s].shape, teacher_feats[t].shape) for s, t in self.pairs.items()
        )

    def forward(self, inp):
        return sum(h(inp.feats[s], inp.teacher_feats[t]) for h, (s, t) in zip(self.hints, self.pairs.items())) / len(
            self.pairs
        )


class AT(Term):
    name = "at"
    needs_teacher = needs_pairs = True
    default_weight = 1000.0

    def __init__(self, weight=None, pairs=None, p: float = 2.0):
        super().__init__(weight, pairs)
        self.p = check_number("p", p, low=0, low_open=True)

    def forward(self, inp):  # summed over the layer pairs, as RepDistiller does (its β = 1000 assumes it)
        return self.pair_losses(inp, lambda s, t: distill.at_loss(s, t, self.p)) * len(self.pairs)

    def spec(self):
        return {**super().spec(), "p": self.p}


class SP(Term):
    name = "sp"
    needs_teacher = needs_pairs = True
    default_weight = 3000.0

    def forward(self, inp):
        return self.pair_losses(inp, distill.sp_loss)


class RKD(Term):
    name = "rkd"
    needs_teacher = needs_pairs = True

    def __init__(self, weight=None, pairs=None, w_dist: float = 25.0, w_angle: float = 50.0):
        super().__init__(weight, pairs)
        self.w_dist, self.w_angle = check_number("w_dist", w_dist, low=0), check_number("w_angle", w_angle, low=0)

    def forward(self, inp):
        return self.pair_losses(inp, lambda s, t: distill.rkd_loss(s, t, self.w_dist, self.w_angle))

    def spec(self):
        return {**super().spec(), "w_dist": self.w_dist, "w_angle": self.w_angle}


class PKT(Term):
    name = "pkt"
    needs_teacher = needs_pairs = True
    default_weight = 30000.0

    def forward(self, inp):
        return self.pair_losses(inp, distill.pkt_loss)


class ICAL(Term):
    """Inter-class angular loss on the student's classifier rows; ``weight`` is λ (the paper uses
    5 with standard augmentation, 10 without). ``pairs="confused"`` weights each pair by a running
    (exponential moving average) pairwise confusion rate from the training batches."""

    name = "ical"
    default_weight = 5.0

    def __init__(self, weight=None, pairs: str = "all", momentum: float = 0.9):
        super().__init__(weight)
        choice("pairs", pairs, PAIRS)
        self.pairs_mode, self.momentum = pairs, check_number("momentum", momentum, low=0, high=1, high_open=True)
        # not saved: after a resume the running confusion rebuilds within a few batches
        self.register_buffer("pair_counts", torch.zeros(0), persistent=False)

    def _confusion(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = logits.shape[1]
        with torch.no_grad():
            counts = torch.zeros(c, c, device=logits.device)
            counts.index_put_((y, logits.argmax(1)), torch.ones_like(y, dtype=counts.dtype), accumulate=True)
            if self.pair_counts.numel() != c * c:
                self.pair_counts = counts.clone()
            else:
                self.pair_counts.mul_(self.momentum).add_(counts, alpha=1 - self.momentum)
            n = self.pair_counts.sum(1)
            pair = self.pair_counts + self.pair_counts.T
            return pair / (n[:, None] + n[None, :]).clamp_min(1e-12)

    def forward(self, inp):
        if inp.model is None or not hasattr(inp.model, "classifier"):
            raise ValueError("the ical term needs the student's classifier (a geoviz model's .classifier)")
        w = inp.model.classifier.weight
        conf = self._confusion(inp.labelled_logits.detach(), inp.targets) if self.pairs_mode != "all" else None
        return ical_loss(w, 1.0, pairs=self.pairs_mode, confusion=conf)

    def spec(self):
        return {**super().spec(), "pairs": self.pairs_mode, "momentum": self.momentum}


TERMS: dict[str, type[Term]] = {
    c.name: c for c in (CrossEntropy, Reconstruction, MSE, CodeL1, KD, Geometric, FitNetTerm, AT, SP, RKD, PKT, ICAL)
}


def build_term(spec) -> Term:
    """A Term from a Term, a name (``"kd"``) or a dict spec (``{"name": "kd", "T": 4}``)."""
    if isinstance(spec, Term):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"a loss term is a name or a dict with 'name', got {spec!r}")
    spec = dict(spec)
    name = spec.pop("name")
    if name not in TERMS:
        raise KeyError(unknown_name_message("loss term", name, list(TERMS)))
    try:
        return TERMS[name](**spec)
    except (TypeError, ValueError) as err:
        raise type(err)(f"bad settings for loss term {name!r}: {err}") from None
