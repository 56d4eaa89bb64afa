"""Golden values of every loss from an independent NumPy computation, zero at student = teacher,
and the invariances each should have."""
import numpy as np
import pytest
import torch

from geoviz.losses import (
    FitNet,
    at_loss,
    build_term,
    kd_loss,
    local_geometry_loss,
    paired_local_features,
    pkt_loss,
    rkd_loss,
    sp_loss,
)

rng = np.random.default_rng(0)


def t64(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


# ---------------------------------------------------------------- NumPy references
def np_softmax(z, axis=1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def np_log_softmax(z, axis=1):
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def np_pool(a, size):
    b, c, h, w = a.shape
    return a.reshape(b, c, size, h // size, size, w // size).mean(axis=(3, 5))


def np_flat(a):
    return a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])


def np_sqd(f):
    return ((f[:, None, :] - f[None, :, :]) ** 2).sum(-1)


def np_affinity_kl(fs, ft):
    m = len(fs)
    off = ~np.eye(m, dtype=bool)

    def logp(f):
        d2 = np_sqd(f)
        z = -d2 / d2[off].mean()
        z[~off] = -np.inf
        lp = np_log_softmax(z)
        lp[~off] = 0.0
        return lp

    lp, lq = logp(ft), logp(fs)
    return (np.exp(lp) * (lp - lq) * off).sum(1).mean()


def np_cosine_pairwise(fs, ft):
    us = fs / np.linalg.norm(fs, axis=1, keepdims=True)
    ut = ft / np.linalg.norm(ft, axis=1, keepdims=True)
    return ((us @ us.T - ut @ ut.T) ** 2).mean()


def np_knn_soft(fs, ft, k):
    m = len(fs)
    off = ~np.eye(m, dtype=bool)
    dt, ds = np.sqrt(np_sqd(ft) + 1e-12), np.sqrt(np_sqd(fs) + 1e-12)
    dt, ds = dt / dt[off].mean(), ds / ds[off].mean()
    nt = np.argsort(np.where(off, dt, np.inf), axis=1)[:, :k]
    ns = np.argsort(np.where(off, ds, np.inf), axis=1)[:, :k]
    mask = np.zeros((m, m), bool)
    for i in range(m):
        mask[i, nt[i]] = mask[i, ns[i]] = True
    h = np.take_along_axis(dt, nt, 1).mean()
    w = np.exp(-((dt / h) ** 2)) * mask
    w /= w.sum(1, keepdims=True)
    return (w * (ds - dt) ** 2).sum(1).mean()


# ---------------------------------------------------------------- geometric losses
S = rng.normal(size=(2, 5, 8, 8))
T = rng.normal(size=(2, 7, 4, 4))
POS = torch.from_numpy(rng.choice(2 * 4 * 4, size=20, replace=False))


@pytest.mark.parametrize("kind", ["affinity_kl", "cosine_pairwise", "knn_soft"])
def test_geometric_losses_golden_values_across_widths_and_resolutions(kind):
    fs = np_flat(np_pool(S, 4))[POS.numpy()]
    ft = np_flat(T)[POS.numpy()]
    ref = {"affinity_kl": np_affinity_kl, "cosine_pairwise": np_cosine_pairwise, "knn_soft": lambda a, b: np_knn_soft(a, b, 5)}[kind](fs, ft)
    got = local_geometry_loss(t64(S), t64(T), kind, k=5, positions=POS).item()
    assert abs(got - ref) < 1e-5 * max(1.0, abs(ref)) and ref > 0


def test_paired_positions_correspond_by_relative_coordinate():
    s = torch.arange(2 * 1 * 8 * 8, dtype=torch.float64).view(2, 1, 8, 8)
    t = torch.arange(2 * 1 * 4 * 4, dtype=torch.float64).view(2, 1, 4, 4)
    fs, ft = paired_local_features(s, t, None)
    assert fs.shape == (32, 1) and ft.shape == (32, 1)
    # position (b=1, y=2, x=3) of the 4x4 grid is the mean of the 2x2 block (4..5, 6..7) of the 8x8 one
    i = 16 + 2 * 4 + 3
    assert ft[i, 0] == t[1, 0, 2, 3] and fs[i, 0] == s[1, 0, 4:6, 6:8].mean()
    up_s, up_t = paired_local_features(s, t, None, align="upsample")
    assert up_s.shape == up_t.shape == (128, 1)


@pytest.mark.parametrize("kind", ["affinity_kl", "cosine_pairwise", "knn_soft"])
def test_geometric_losses_zero_at_equality_and_invariant(kind):
    t = t64(rng.normal(size=(3, 6, 4, 4)))
    pos = torch.arange(40)
    base = local_geometry_loss(t, t, kind, positions=pos).item()
    assert abs(base) < 1e-9
    # the student in a wider channel space, rotated and scaled, has the teacher's geometry
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    wide = torch.cat([t, torch.zeros(3, 4, 4, 4, dtype=t.dtype)], 1)
    rotated = 3.0 * torch.einsum("bchw,dc->bdhw", wide, t64(q))
    assert abs(local_geometry_loss(rotated, t, kind, positions=pos).item()) < 1e-8
    s = t64(rng.normal(size=(3, 9, 4, 4)))
    q9, _ = np.linalg.qr(rng.normal(size=(9, 9)))
    a = local_geometry_loss(s, t, kind, positions=pos).item()
    b = local_geometry_loss(0.2 * torch.einsum("bchw,dc->bdhw", s, t64(q9)), t, kind, positions=pos).item()
    assert a > 1e-3 and abs(a - b) < 1e-8 * max(1, a)


@pytest.mark.parametrize("kind", ["affinity_kl", "cosine_pairwise", "knn_soft"])
def test_gradient_descent_on_the_student_reduces_the_loss(kind):
    torch.manual_seed(0)
    t = torch.randn(2, 8, 4, 4)
    s = torch.randn(2, 5, 4, 4, requires_grad=True)
    opt = torch.optim.Adam([s], lr=0.05)
    first = None
    for _ in range(60):
        loss = local_geometry_loss(s, t, kind, m=None)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.6 * first


def test_geometric_loss_samples_m_positions_and_rejects_bad_input():
    s, t = torch.randn(4, 3, 8, 8), torch.randn(4, 5, 8, 8)
    g = torch.Generator().manual_seed(1)
    fs, ft = paired_local_features(s, t, 17, generator=g)
    assert fs.shape == (17, 3) and ft.shape == (17, 5)
    with pytest.raises(ValueError, match="batch sizes 4 and 3 differ"):
        local_geometry_loss(s, t[:3])
    with pytest.raises(ValueError, match="unknown geometric loss kind 'mmd'"):
        local_geometry_loss(s, t, "mmd")
    with pytest.raises(ValueError, match=r"k must be in \[1, 9\]"):
        local_geometry_loss(s, t, "knn_soft", k=10, m=10)


# ---------------------------------------------------------------- KD and the image-level baselines
def test_kd_golden_value():
    s, t = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    T_ = 4.0
    p, logq = np_softmax(t / T_), np_log_softmax(s / T_)
    ref = (p * (np.log(p) - logq)).sum(1).mean() * T_ * T_
    assert abs(kd_loss(t64(s), t64(t), T_).item() - ref) < 1e-10
    assert abs(kd_loss(t64(t), t64(t)).item()) < 1e-12
    with pytest.raises(ValueError, match="batch sizes"):
        kd_loss(t64(s), t64(t[:3]))


def test_fitnet_golden_value_and_parameters():
    s, t = rng.normal(size=(2, 3, 8, 8)), rng.normal(size=(2, 4, 4, 4))
    hint = FitNet(3, 4).double()
    w = hint.regressor.weight.detach().numpy()[:, :, 0, 0]
    ref = ((np.einsum("dc,bchw->bdhw", w, np_pool(s, 4)) - t) ** 2).mean()
    assert abs(hint(t64(s), t64(t)).item() - ref) < 1e-10
    assert sum(p.numel() for p in hint.parameters()) == 12


def test_attention_transfer_golden_value():
    s, t = rng.normal(size=(3, 4, 4, 4)), rng.normal(size=(3, 6, 4, 4))

    def att(a):
        q = (np.abs(a) ** 2).mean(1).reshape(a.shape[0], -1)
        return q / np.linalg.norm(q, axis=1, keepdims=True)

    assert abs(at_loss(t64(s), t64(t)).item() - ((att(s) - att(t)) ** 2).mean()) < 1e-12


def test_similarity_preserving_golden_value():
    s, t = rng.normal(size=(5, 3, 2, 2)), rng.normal(size=(5, 7, 4, 4))

    def g(a):
        f = a.reshape(a.shape[0], -1)
        m = f @ f.T
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    assert abs(sp_loss(t64(s), t64(t)).item() - ((g(s) - g(t)) ** 2).sum() / 25) < 1e-12


def np_huber(x):
    a = np.abs(x)
    return np.where(a < 1, 0.5 * x * x, a - 0.5).mean()


def test_rkd_golden_value():
    s, t = rng.normal(size=(5, 4)), rng.normal(size=(5, 6))
    off = ~np.eye(5, dtype=bool)

    def dist(e):
        d = np.sqrt(np_sqd(e))
        return d / d[off].mean()

    def ang(e):
        out = np.zeros((5, 5, 5))
        for j in range(5):
            v = e - e[j]
            n = np.linalg.norm(v, axis=1, keepdims=True)
            v = v / np.maximum(n, 1e-12)
            out[j] = v @ v.T
        return out.ravel()

    ref = 25 * np_huber(dist(s)[off] - dist(t)[off]) + 50 * np_huber(ang(s) - ang(t))
    assert abs(rkd_loss(t64(s), t64(t)).item() - ref) < 1e-9
    assert rkd_loss(t64(t), t64(t)).item() < 1e-12


def test_pkt_golden_value_with_pooling():
    s, t = rng.normal(size=(4, 3, 2, 2)), rng.normal(size=(4, 5, 2, 2))

    def kern(a):
        e = a.mean(axis=(2, 3))
        u = e / np.linalg.norm(e, axis=1, keepdims=True)
        k = (u @ u.T + 1) / 2
        return k / k.sum(1, keepdims=True)

    p, q = kern(t), kern(s)
    ref = (p * np.log((p + 1e-7) / (q + 1e-7))).sum(1).mean()
    assert abs(pkt_loss(t64(s), t64(t)).item() - ref) < 1e-10


def test_term_specs():
    term = build_term({"name": "geometric", "pairs": {"layer2": "layer2"}, "kind": "knn_soft", "k": 4})
    assert term.spec()["kind"] == "knn_soft" and term.student_layers == ("layer2",)
    assert build_term("kd").weight == 1.0 and build_term({"name": "at", "pairs": {"a": "b"}}).weight == 1000.0
    with pytest.raises(KeyError, match="unknown loss term 'geometry'; closest: 'geometric'"):
        build_term("geometry")
    with pytest.raises(ValueError, match="needs layer pairs"):
        build_term("geometric")
    with pytest.raises(TypeError, match="bad settings for loss term 'kd'"):
        build_term({"name": "kd", "temperature": 3})


@pytest.mark.parametrize("kind", ["affinity_kl", "cosine_pairwise", "knn_soft"])
def test_gradient_has_no_radial_part(kind):
    """Scale invariance of the value is not enough: a scale-invariant loss has grad·s = 0
    (Euler's theorem), so training feels no pull to shrink or grow the student's features. A
    detached normaliser breaks this and let the student's features collapse step by step."""
    s = t64(rng.normal(size=(2, 6, 4, 4))).requires_grad_(True)
    t = t64(rng.normal(size=(2, 9, 4, 4)))
    local_geometry_loss(s, t, kind, positions=torch.arange(24)).backward()
    radial = (s.grad * s).sum().item()
    assert abs(radial) < 1e-10 * max(1.0, s.grad.norm().item() * s.norm().item())
