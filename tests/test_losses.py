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
    ref = {
        "affinity_kl": np_affinity_kl,
        "cosine_pairwise": np_cosine_pairwise,
        "knn_soft": lambda a, b: np_knn_soft(a, b, 5),
    }[kind](fs, ft)
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


# RepDistiller's distiller_zoo, transcribed to NumPy from its formulas (FitNet's ConvReg + MSE,
# AT, SP, RKD, PKT), so that our losses are checked against the reference, not against themselves.
def np_conv(x, w, b, stride, pad):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    co, ci, kh, kw = w.shape
    ho, wo = (x.shape[2] - kh) // stride + 1, (x.shape[3] - kw) // stride + 1
    out = np.zeros((x.shape[0], co, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = x[:, :, i * stride : i * stride + kh, j * stride : j * stride + kw]
            out[:, :, i, j] = np.einsum("bchw,ochw->bo", patch, w) + b
    return out


def np_conv_transpose(x, w, b, stride, pad):
    ci, co, kh, kw = w.shape
    h, wd = x.shape[2], x.shape[3]
    full = np.zeros((x.shape[0], co, (h - 1) * stride + kh, (wd - 1) * stride + kw))
    for i in range(h):
        for j in range(wd):
            full[:, :, i * stride : i * stride + kh, j * stride : j * stride + kw] += np.einsum(
                "bc,cohw->bohw", x[:, :, i, j], w
            )
    return full[:, :, pad : full.shape[2] - pad, pad : full.shape[3] - pad] + b[None, :, None, None]


def np_bn_relu(x, eps=1e-5):  # BatchNorm2d in training mode (batch statistics, biased variance), weight 1, bias 0
    mu, var = x.mean(axis=(0, 2, 3), keepdims=True), x.var(axis=(0, 2, 3), keepdims=True)
    return np.maximum((x - mu) / np.sqrt(var + eps), 0)


@pytest.mark.parametrize(
    "s_hw, t_hw, kind", [(4, 4, "valid"), (8, 4, "stride2"), (2, 4, "transposed"), (6, 4, "valid")]
)
def test_fitnet_equals_repdistiller_convreg_and_mse(s_hw, t_hw, kind):
    s, t = rng.normal(size=(3, 3, s_hw, s_hw)), rng.normal(size=(3, 4, t_hw, t_hw))
    hint = FitNet(s.shape, t.shape).double().train()
    conv = hint.regressor[0]
    w, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()
    if kind == "stride2":
        r = np_conv(s, w, b, 2, 1)
    elif kind == "transposed":
        r = np_conv_transpose(s, w, b, 2, 1)
    else:
        r = np_conv(s, w, b, 1, 0)
    ref = ((np_bn_relu(r) - t) ** 2).mean()
    assert abs(hint(t64(s), t64(t)).item() - ref) < 1e-6
    with pytest.raises(ValueError, match="cannot regress a student map of 3×3 onto a teacher map of 4×4"):
        FitNet((1, 3, 3, 3), (1, 4, 4, 4))


@pytest.mark.parametrize("p", [2.0, 3.0])
def test_attention_transfer_equals_repdistiller(p):
    s, t = rng.normal(size=(3, 4, 8, 8)), rng.normal(size=(3, 6, 4, 4))

    def att(a):  # RepDistiller: F.normalize(f.pow(p).mean(1).view(B, -1)), the larger map pooled to the smaller
        q = (a**p).mean(1).reshape(a.shape[0], -1)
        return q / np.linalg.norm(q, axis=1, keepdims=True)

    assert abs(at_loss(t64(s), t64(t), p).item() - ((att(np_pool(s, 4)) - att(t)) ** 2).mean()) < 1e-10


def test_similarity_preserving_equals_repdistiller():
    s, t = rng.normal(size=(5, 3, 2, 2)), rng.normal(size=(5, 7, 4, 4))

    def g(a):
        f = a.reshape(a.shape[0], -1)
        m = f @ f.T
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    assert abs(sp_loss(t64(s), t64(t)).item() - ((g(t) - g(s)) ** 2).sum() / 25) < 1e-12


def np_huber(x):
    a = np.abs(x)
    return np.where(a < 1, 0.5 * x * x, a - 0.5).mean()


def np_rkd(s, t, w_d=25.0, w_a=50.0):
    """RepDistiller's RKDLoss on (B, D) embeddings."""

    def pdist(e):
        d = np.sqrt(np.maximum(np_sqd(e), 1e-12))
        np.fill_diagonal(d, 0.0)
        return d / d[d > 0].mean()

    def angles(e):
        v = e[None, :, :] - e[:, None, :]  # v[i, j] = e_j - e_i
        n = np.linalg.norm(v, axis=2, keepdims=True)
        v = v / np.maximum(n, 1e-12)
        return np.einsum("ijd,ikd->ijk", v, v).ravel()

    return w_d * np_huber(pdist(s) - pdist(t)) + w_a * np_huber(angles(s) - angles(t))


def test_rkd_equals_repdistiller_including_the_diagonal():
    s, t = rng.normal(size=(6, 4)), rng.normal(size=(6, 9))
    assert abs(rkd_loss(t64(s), t64(t)).item() - np_rkd(s, t)) < 1e-9
    assert rkd_loss(t64(t), t64(t)).item() < 1e-12
    maps = rng.normal(size=(6, 5, 2, 2)), rng.normal(size=(6, 3, 4, 4))  # maps are average-pooled first
    assert (
        abs(rkd_loss(t64(maps[0]), t64(maps[1])).item() - np_rkd(maps[0].mean(axis=(2, 3)), maps[1].mean(axis=(2, 3))))
        < 1e-9
    )


def np_pkt(s, t, eps=1e-7):
    """RepDistiller's PKT.cosine_similarity_loss on (B, D) embeddings: the mean over all B² entries."""

    def kern(e):
        u = e / (np.linalg.norm(e, axis=1, keepdims=True) + eps)
        k = (u @ u.T + 1) / 2
        return k / k.sum(1, keepdims=True)

    p, q = kern(t), kern(s)
    return (p * np.log((p + eps) / (q + eps))).mean()


def test_pkt_equals_repdistiller_with_pooling():
    s, t = rng.normal(size=(8, 3, 2, 2)), rng.normal(size=(8, 5, 2, 2))
    ref = np_pkt(s.mean(axis=(2, 3)), t.mean(axis=(2, 3)))
    assert abs(pkt_loss(t64(s), t64(t)).item() - ref) < 1e-10 and ref > 0


def test_baseline_terms_carry_repdistillers_weights_and_layer_reductions():
    """β from RepDistiller's scripts/run_cifar_distill.sh (hint 100, attention 1000, similarity 3000,
    rkd 1, pkt 30000); its AT sums the per-layer losses (loss_kd = sum(loss_group))."""
    from geoviz.losses.terms import TermInputs

    assert {n: build_term({"name": n, "pairs": {"a": "b"}}).weight for n in ("fitnet", "at", "sp", "rkd", "pkt")} == {
        "fitnet": 100.0,
        "at": 1000.0,
        "sp": 3000.0,
        "rkd": 1.0,
        "pkt": 30000.0,
    }
    feats = {f"s{i}": t64(rng.normal(size=(3, 4, 4, 4))) for i in range(3)}
    tfeats = {f"t{i}": t64(rng.normal(size=(3, 6, 4, 4))) for i in range(3)}
    term = build_term({"name": "at", "pairs": {f"s{i}": f"t{i}" for i in range(3)}})
    inp = TermInputs(None, None, feats, None, tfeats)
    assert abs(term(inp).item() - sum(at_loss(feats[f"s{i}"], tfeats[f"t{i}"]).item() for i in range(3))) < 1e-12


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


# ---------------------------------------------------------------- scope and bandwidth
def np_perplexity_kl(fs, ft, perp):
    """KL of neighbour distributions, each teacher point's precision solved by scipy's brentq for
    entropy = log(perp) on the teacher's relative squared distances (an independent root finder),
    the student's distribution around the same point taking that precision."""
    from scipy.optimize import brentq

    m = len(ft)
    off = ~np.eye(m, dtype=bool)

    def rel(f):
        d2 = np_sqd(f)
        return d2 / d2[off].mean()

    def logsm(z):
        return z - z.max() - np.log(np.exp(z - z.max()).sum())

    rt, rs = rel(ft), rel(fs)
    kl = 0.0
    for i in range(m):
        r = rt[i, off[i]]
        logb = brentq(
            lambda lb: -(np.exp(logsm(-np.exp(lb) * r)) * logsm(-np.exp(lb) * r)).sum() - np.log(perp),
            -12,
            8,
            xtol=1e-12,
        )
        lp, lq = logsm(-np.exp(logb) * r), logsm(-np.exp(logb) * rs[i, off[i]])
        kl += (np.exp(lp) * (lp - lq)).sum()
    return kl / m


def test_image_scope_and_perplexity_bandwidth_golden_values():
    rng = np.random.default_rng(7)  # its own data: the result must not depend on which tests ran before
    s, t = rng.normal(size=(3, 5, 8, 8)), rng.normal(size=(3, 7, 4, 4))
    pos = torch.from_numpy(rng.choice(16, size=10, replace=False))
    per_image = [(np_flat(np_pool(s[b : b + 1], 4))[pos.numpy()], np_flat(t[b : b + 1])[pos.numpy()]) for b in range(3)]
    ref = np.mean([np_affinity_kl(a, b) for a, b in per_image])
    got = local_geometry_loss(t64(s), t64(t), scope="image", positions=pos).item()
    assert abs(got - ref) < 1e-8 * max(1, ref) and ref > 0
    ref_p = np.mean([np_perplexity_kl(a, b, 4.0) for a, b in per_image])
    got_p = local_geometry_loss(
        t64(s), t64(t), scope="image", bandwidth="perplexity", perplexity=4.0, positions=pos
    ).item()
    assert abs(got_p - ref_p) < 1e-6 * max(1, ref_p) and abs(got_p - got) > 1e-3
    fs, ft = np_flat(np_pool(s, 4))[POS.numpy()], np_flat(t)[POS.numpy()]
    got_b = local_geometry_loss(t64(s), t64(t), bandwidth="perplexity", perplexity=5.0, positions=POS).item()
    assert abs(got_b - np_perplexity_kl(fs, ft, 5.0)) < 1e-6


@pytest.mark.parametrize("scope, bandwidth", [("image", "global"), ("image", "perplexity"), ("batch", "perplexity")])
def test_local_variants_are_invariant_zero_at_equality_and_have_no_radial_gradient(scope, bandwidth):
    t = t64(rng.normal(size=(3, 6, 4, 4)))
    kw = dict(scope=scope, bandwidth=bandwidth, perplexity=5.0, positions=torch.arange(12 if scope == "image" else 40))
    assert abs(local_geometry_loss(t, t, **kw).item()) < 1e-9
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert abs(local_geometry_loss(2.5 * torch.einsum("bchw,dc->bdhw", t, t64(q)), t, **kw).item()) < 1e-8
    s = t64(rng.normal(size=(3, 9, 4, 4))).requires_grad_(True)
    loss = local_geometry_loss(s, t, **kw)
    loss.backward()
    assert loss.item() > 1e-3 and abs((s.grad * s).sum().item()) < 1e-9 * max(
        1.0, s.grad.norm().item() * s.norm().item()
    )


def test_image_scope_sees_only_each_images_own_positions():
    """Moving one image's features changes only that image's term: no cross-image neighbours."""
    t = t64(rng.normal(size=(2, 4, 4, 4)))
    s = t64(rng.normal(size=(2, 5, 4, 4)))
    per = [local_geometry_loss(s[b : b + 1], t[b : b + 1], scope="image", m=None).item() for b in range(2)]
    assert abs(local_geometry_loss(s, t, scope="image", m=None).item() - np.mean(per)) < 1e-12
    with pytest.raises(ValueError, match="unknown scope 'global'"):
        local_geometry_loss(s, t, scope="global")


def test_perplexity_bandwidth_stays_bounded_when_teacher_points_coincide():
    """20 of 64 teacher positions identical (ReLU-zeroed background). A faithful student (the
    teacher rotated, with noise of 0.01) must get a small loss and gradient, as without the
    duplicates; before tied nearest neighbours raised the target perplexity, their β ran to the
    cap and this gave a loss of 0.83 and a gradient norm of 30."""
    g = np.random.default_rng(3)
    ft = g.normal(size=(64, 8))
    ft[:20] = 0.0
    q, _ = np.linalg.qr(g.normal(size=(8, 8)))
    fs = ft @ q + 0.01 * g.normal(size=(64, 8))
    s = t64(fs.T.reshape(1, 8, 8, 8)).requires_grad_(True)
    loss = local_geometry_loss(s, t64(ft.T.reshape(1, 8, 8, 8)), bandwidth="perplexity", perplexity=10.0, m=None)
    loss.backward()
    assert loss.item() < 0.01 and s.grad.norm().item() < 0.5, (loss.item(), s.grad.norm().item())
