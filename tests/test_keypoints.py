"""Sparse keypoint autoencoder, keypoints, the sparse-coding baseline, digits and MNIST loaders."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from data_files import write_idx

from geoviz.datasets import get_dataset, labels_of
from geoviz.engine import fit
from geoviz.methods.keypoints import ConvSparseCoder, Keypoints, SparseKeypointAE, keypoint_histogram, line_filters


@pytest.fixture
def images():
    return torch.stack([get_dataset("digits", "test")[i][0] for i in range(16)])


@pytest.mark.parametrize("setup", ["MF4", "AF4", "AF5"])
def test_sparsity_budget_and_local_maxima_only(setup, images):
    torch.manual_seed(0)
    ae = SparseKeypointAE(setup, max_keypoints=7, window=5).eval()
    with torch.no_grad():
        dense = ae.feature_maps(images)
        code = ae.code(images)
    assert code.shape == (16, ae.num_types, 28, 28)
    nz = (code != 0).flatten(1).sum(1)
    assert nz.max() <= 7 and nz.min() >= 1
    b, k, y, x = code.nonzero(as_tuple=True)
    d = dense.numpy()
    for bi, ki, yi, xi in zip(b.tolist(), k.tolist(), y.tolist(), x.tolist()):
        win = d[bi, ki, max(0, yi - 2) : yi + 3, max(0, xi - 2) : xi + 3]  # an independent NumPy window
        assert d[bi, ki, yi, xi] == win.max() > 0 and code[bi, ki, yi, xi] == d[bi, ki, yi, xi]
    # the kept ones are the 7 strongest of ALL local maxima of the image (found here in NumPy)
    r = 2
    for i in range(16):
        maxima = []
        for k in range(d.shape[1]):
            for yy in range(28):
                for xx in range(28):
                    v = d[i, k, yy, xx]
                    if (
                        v > ae.threshold
                        and v == d[i, k, max(0, yy - r) : yy + r + 1, max(0, xx - r) : xx + r + 1].max()
                    ):
                        maxima.append((v, k, yy, xx))
        top = sorted(maxima, reverse=True)[:7]
        kept = {tuple(p) for p in code[i].nonzero().tolist()}
        assert sorted(code[i][code[i] > 0].tolist(), reverse=True) == [float(m[0]) for m in top], i
        assert {m[1:] for m in maxima if m[0] > top[-1][0]} <= kept, i  # ties at the budget's edge may go either way


def test_encode_table_decode_round_trip_is_exact(images):
    torch.manual_seed(1)
    ae = SparseKeypointAE("AF4", max_keypoints=12)
    kp = ae.encode(images)
    rows = kp.to_table()
    assert set(rows[0]) == {"image", "type", "y", "x", "intensity"} and len(rows) == len(kp)
    back = Keypoints.from_table(rows, kp.n_images, kp.num_types, kp.size)
    with torch.no_grad():
        ae.eval()
        code = ae.code(images)
    assert torch.equal(back.to_maps(), code) and torch.equal(Keypoints.from_maps(code).to_maps(), code)
    assert torch.equal(ae.decode(back), ae.decode(code))


def test_select_keeps_the_strongest_per_image_and_the_given_types():
    kp = Keypoints.from_maps(torch.rand(3, 4, 6, 6) * (torch.rand(3, 4, 6, 6) > 0.8))
    top = kp.select(top=2, types=[1, 3])
    for i in range(3):
        mine = kp.intensity[(kp.image == i) & torch.isin(kp.type, torch.tensor([1, 3]))].numpy()
        ref = np.sort(mine)[::-1][:2]
        assert np.allclose(np.sort(top.intensity[top.image == i].numpy())[::-1], ref)
    assert set(top.type.tolist()) <= {1, 3} and kp.select(top=0).counts().sum() == 0


def test_mf4_filters_are_fixed_line_detectors(images):
    ae = SparseKeypointAE("MF4")
    w0 = ae.encoder[0].weight.detach().clone()
    assert torch.allclose(w0, line_filters(7)) and not ae.encoder[0].weight.requires_grad
    trainable = [n for n, p in ae.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("decoder.") for n in trainable)  # only the decoder learns
    fit(
        ae,
        torch.utils.data.TensorDataset(images, torch.zeros(16, dtype=torch.long)),
        objective="reconstruction",
        epochs=1,
        batch_size=8,
        lr=1e-2,
        optimizer="adamw",
    )
    assert torch.equal(ae.encoder[0].weight.cpu(), w0.cpu())  # fit may have moved the model to a GPU
    f = line_filters(7)
    assert torch.allclose(f.flatten(1).sum(1), torch.zeros(4), atol=1e-6) and torch.allclose(
        f.flatten(1).norm(dim=1), torch.ones(4)
    )
    assert f[0, 0, 3].sum() > 0 and f[2, 0, :, 3].sum() > 0  # 0°: the middle row; 90°: the middle column


def test_building_blocks_have_the_decoders_output_shape():
    ae = SparseKeypointAE("AF5")
    blocks = [ae.building_block(t) for t in range(5)]
    assert all(b.shape == (1, 28, 28) for b in blocks)
    assert ae.building_block(2, size=(20, 24)).shape == (1, 20, 24)
    with pytest.raises(ValueError, match=r"type must be in \[0, 5\)"):
        ae.building_block(5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(setup="AF3"), "unknown set-up 'AF3'"),
        (dict(setup="AF4", num_types=0), "K must be a whole number >= 1"),
        (dict(setup="MF4", num_types=5), "MF4 has exactly 4 fixed line filters"),
        (dict(setup="AF4", max_keypoints=0), "max_keypoints .* must be a whole number >= 1"),
        (dict(setup="AF4", threshold=-0.1), "threshold must be >= 0"),
        (dict(setup="AF4", window=4), "window must be an odd number"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparseKeypointAE(**kwargs)


def test_bad_images():
    ae = SparseKeypointAE("AF4", window=5)
    with pytest.raises(ValueError, match=r"expected images \(B, 1, H, W\), got \(2, 3, 28, 28\)"):
        ae.encode(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="at least 5 px"):
        ae(torch.rand(2, 1, 4, 28))
    with pytest.raises(ValueError, match=r"expected sparse maps \(B, 4, H, W\)"):
        ae.decode(torch.zeros(1, 5, 28, 28))


def test_keypoint_histogram_matches_a_loop():
    kp = Keypoints.from_maps(torch.rand(2, 3, 8, 8) * (torch.rand(2, 3, 8, 8) > 0.7))
    h = keypoint_histogram(kp, grid=2)
    ref = np.zeros((2, 3 * 4))
    for r in kp.to_table():
        ref[r["image"], r["type"] * 4 + (r["y"] // 4) * 2 + r["x"] // 4] += r["intensity"]
    assert np.allclose(h, ref)


def test_convolutional_omp_matches_sklearn_omp_on_the_explicit_dictionary():
    from sklearn.linear_model import OrthogonalMatchingPursuit

    torch.manual_seed(0)
    coder = ConvSparseCoder(n_atoms=2, atom_size=3, n_nonzero=5)
    a = torch.randn(2, 1, 3, 3)
    coder.atoms = a / a.flatten(1).norm(dim=1)[:, None, None, None]
    x = torch.rand(3, 1, 8, 8)
    z = coder.code(x)
    assert ((z != 0).flatten(1).sum(1) == 5).all()
    # the explicit dictionary: every atom at every position, as columns
    eye = torch.eye(2 * 64).view(-1, 2, 8, 8)
    D = F.conv_transpose2d(eye, coder.atoms, padding=1).reshape(-1, 64).T.double().numpy()
    for i in range(3):
        omp = OrthogonalMatchingPursuit(n_nonzero_coefs=5, fit_intercept=False).fit(
            D, x[i].reshape(-1).double().numpy()
        )
        ref = D @ omp.coef_
        got = coder.reconstruct(z[i : i + 1]).reshape(-1).double().numpy()
        assert np.allclose(got, ref, atol=1e-5)
    with pytest.raises(ValueError, match="call fit"):
        ConvSparseCoder().code(x)


def test_mnist_reads_idx_files_and_digits_are_embedded(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    tr = rng.integers(0, 256, (40, 28, 28))
    te = rng.integers(0, 256, (10, 28, 28))
    write_idx(raw / "train-images-idx3-ubyte.gz", tr, 2051)
    write_idx(raw / "train-labels-idx1-ubyte.gz", np.arange(40) % 10, 2049)
    write_idx(raw / "t10k-images-idx3-ubyte.gz", te, 2051)
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.arange(10) % 10, 2049)
    test = get_dataset("mnist", "test", root=tmp_path)
    x, y = test[3]
    assert x.shape == (1, 28, 28) and np.allclose(x.numpy()[0] * 255, te[3]) and y == 3
    train, val = (
        get_dataset("mnist", "train", root=tmp_path, n_val=10),
        get_dataset("mnist", "val", root=tmp_path, n_val=10),
    )
    assert (len(train), len(val)) == (30, 10) and np.bincount(labels_of(val).numpy()).tolist() == [1] * 10
    with pytest.raises(FileNotFoundError, match="MNIST not found in .*nowhere/MNIST/raw.*never downloads"):
        get_dataset("mnist", root=tmp_path / "nowhere")
    d = get_dataset("digits", "train")
    assert len(d) == 1257 and d[0][0].shape == (1, 28, 28) and d.classes[7] == "7"


def _one(ae, entries, size=(28, 28)):
    maps = torch.zeros(1, ae.num_types, *size)
    for t, y, x, v in entries:
        maps[0, t, y, x] += v
    return maps


def test_block_decoder_draws_one_block_per_keypoint_that_scales_and_adds():
    torch.manual_seed(0)
    ae = SparseKeypointAE("AF4")  # decoder="blocks": the default
    with torch.no_grad():
        ae.decoder[0].bias.fill_(0.1)
    bias = ae.decode(torch.zeros(1, 4, 28, 28))
    a, b = _one(ae, [(1, 12, 13, 0.7)]), _one(ae, [(2, 14, 15, 1.3), (1, 20, 6, 0.4)])  # overlapping blocks
    da, db, dab = ae.decode(a) - bias, ae.decode(b) - bias, ae.decode(a + b) - bias
    assert torch.allclose(dab, da + db, atol=1e-6)  # blocks add
    assert torch.allclose(ae.decode(2 * a) - bias, 2 * da, atol=1e-6)  # intensity scales the block
    # the block is the type's kernel itself, placed at the keypoint (independent of the decoder code)
    w = ae.decoder[0].weight[1, 0].detach()
    p = w.shape[-1] // 2
    assert torch.allclose(da[0, 0, 12 - p : 12 + p + 1, 13 - p : 13 + p + 1], 0.7 * w, atol=1e-6)
    assert float(da[0, 0].abs().sum()) == pytest.approx(
        float(da[0, 0, 12 - p : 12 + p + 1, 13 - p : 13 + p + 1].abs().sum()), rel=1e-6
    )
    # the nonlinear decoder does neither (so these checks can fail)
    # building_block is that block alone (no bias), scaled by the intensity
    blk = ae.building_block(1, intensity=2.0)
    assert torch.allclose(
        blk[0, 14 - p : 14 + p + 1, 14 - p : 14 + p + 1], 2.0 * w, atol=1e-6
    ) and blk.abs().sum() == pytest.approx(2.0 * w.abs().sum().item(), rel=1e-5)
    nl = SparseKeypointAE("AF4", decoder="nonlinear")
    nb = nl.decode(torch.zeros(1, 4, 28, 28))
    big = _one(nl, [(1, 12, 13, 3.0)])
    assert not torch.allclose(nl.decode(2 * big) - nb, 2 * (nl.decode(big) - nb), atol=1e-3)
    with pytest.raises(ValueError, match="unknown decoder 'mlp'"):
        SparseKeypointAE("AF4", decoder="mlp")


def test_keypoints_move_with_a_shifted_image(images):
    """MF4 (fixed filters, local maxima, no budget cut): shifting the image shifts every keypoint."""
    canvas = torch.zeros(4, 1, 44, 44)
    canvas[:, :, 8:36, 8:36] = images[:4]
    ae = SparseKeypointAE("MF4", max_keypoints=10_000, threshold=1e-4).eval()
    shifted = torch.roll(canvas, shifts=(3, -2), dims=(2, 3))  # the content stays clear of the border
    k0, k1 = ae.encode(canvas), ae.encode(shifted)
    a = {
        (int(i), int(t), int(y) + 3, int(x) - 2, round(float(v), 4))
        for i, t, y, x, v in zip(k0.image, k0.type, k0.y, k0.x, k0.intensity)
    }
    b = {
        (int(i), int(t), int(y), int(x), round(float(v), 4))
        for i, t, y, x, v in zip(k1.image, k1.type, k1.y, k1.x, k1.intensity)
    }
    assert len(a) > 20 and a == b


def test_autoencoder_beats_the_mean_image_after_training(run_root):
    from geoviz.runs import RunDir

    train, test = get_dataset("digits", "train"), get_dataset("digits", "test", n=100)
    xtr = torch.stack([train[i][0] for i in range(len(train))])
    xte = torch.stack([test[i][0] for i in range(len(test))])
    torch.manual_seed(0)
    ae = SparseKeypointAE("AF4", max_keypoints=24)  # defaults: block decoder, hidden 48, gradients to kept keypoints
    fit(
        ae,
        train,
        None,
        objective="reconstruction",
        terms=["reconstruction"],
        epochs=4,
        optimizer="adamw",
        lr=5e-3,
        weight_decay=0.0,
        batch_size=64,
        device="cpu",
        run=RunDir("ae-beats-mean", run_root),
        seed=0,
        progress=False,
    )
    mse = F.mse_loss(ae.eval().decode(ae.encode(xte)), xte).item()
    floor = F.mse_loss(xtr.mean(0, keepdim=True).expand_as(xte), xte).item()
    assert mse < 0.75 * floor, (mse, floor)


def test_fista_matches_sklearn_lasso_and_refit_is_least_squares():
    from sklearn.linear_model import Lasso

    torch.manual_seed(0)
    coder = ConvSparseCoder(n_atoms=2, atom_size=3)
    a = torch.randn(2, 1, 3, 3)
    coder.atoms = a / a.flatten(1).norm(dim=1)[:, None, None, None]
    x = torch.rand(2, 1, 8, 8)
    lam = 0.2
    z = coder.code_l1(x, lam, iters=3000)
    eye = torch.eye(2 * 64).view(-1, 2, 8, 8)
    D = F.conv_transpose2d(eye, coder.atoms, padding=1).reshape(-1, 64).T.double().numpy()
    for i in range(2):
        y = x[i].reshape(-1).double().numpy()
        ref = (
            Lasso(alpha=lam / 64, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(D, y).coef_
        )  # sklearn: (1/2n)||y-Dw||² + α||w||₁
        assert np.allclose(z[i].reshape(-1).double().numpy(), ref, atol=2e-3)
        support = np.flatnonzero(z[i].reshape(-1).numpy())
        ls = np.linalg.lstsq(D[:, support], y, rcond=None)[0]
        got = coder.refit(x[i : i + 1], z[i : i + 1]).reshape(-1).double().numpy()
        assert np.allclose(got[support], ls, atol=1e-4) and np.count_nonzero(got) <= len(support)
    # the per-image bisection: every image at most the asked number of non-zeros, none empty
    lam5 = coder.penalty_for(x, 5, iters=300)
    counts = (coder.code_l1(x, lam5, 300).abs() > 1e-6).flatten(1).sum(1)
    assert lam5.shape == (2,) and (counts <= 5).all() and (counts >= 2).all()

    # momentum: after 30 steps FISTA's objective is below that of plain ISTA (same step), both from 0
    def objective(z):
        return 0.5 * (coder.reconstruct(z) - x).pow(2).sum().item() + lam * z.abs().sum().item()

    step = 1.0 / coder._lipschitz(x.shape[-2:])
    z_ista = torch.zeros(2, 2, 8, 8)
    for _ in range(30):
        g = z_ista - step * coder._adjoint(coder.reconstruct(z_ista) - x)
        z_ista = torch.sign(g) * (g.abs() - step * lam).clamp_min(0.0)
    assert objective(coder.code_l1(x, lam, iters=30)) < objective(z_ista)


def test_bits_and_quantisation():
    from geoviz.methods.keypoints import bits_per_nonzero, quantize

    assert bits_per_nonzero(28, 28, 4) == 10 + 2 + 8 and bits_per_nonzero(28, 28, 8, signed=True) == 10 + 3 + 8 + 1
    z = torch.randn(3, 4, 5, 5) * (torch.rand(3, 4, 5, 5) > 0.8)
    q = quantize(z, 8)
    step = z.flatten(1).abs().amax(1) / 255
    assert ((q - z).abs().flatten(1).amax(1) <= step / 2 + 1e-7).all() and ((q != 0) <= (z != 0)).all()
    levels = q.abs() / z.flatten(1).abs().amax(1).view(-1, 1, 1, 1) * 255  # 8 bits: integer levels 0..255
    assert torch.allclose(levels, levels.round(), atol=1e-3) and levels.max() <= 255 + 1e-3


def test_keypoints_run_takes_mnist_from_data_when_present(tmp_path, monkeypatch, run_root):
    """dataset="auto" (the default) reads MNIST from data/ when its four files are there, and the
    digits otherwise; a mutant that ignores data/ would run on the digits."""
    from geoviz.experiments.keypoints import KeypointsConfig, run_keypoints

    data = tmp_path / "data"
    raw = data / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    n_train = 5000 + 300  # MNIST's validation hold-out is 5,000 training images
    # images that differ by class (a bright bar at a class-dependent row), as a file MNIST ships
    tr = rng.integers(0, 40, (n_train, 28, 28))
    tr[np.arange(n_train), 2 + 2 * (np.arange(n_train) % 10)] = 250
    te = rng.integers(0, 40, (100, 28, 28))
    te[np.arange(100), 2 + 2 * (np.arange(100) % 10)] = 250
    write_idx(raw / "train-images-idx3-ubyte.gz", tr, 2051)
    write_idx(raw / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10, 2049)
    write_idx(raw / "t10k-images-idx3-ubyte.gz", te, 2051)
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.arange(100) % 10, 2049)
    monkeypatch.setenv("GEOVIZ_DATA", str(data))
    cfg = KeypointsConfig.from_profile("smoke", setups=("AF4",), max_keypoints=6, n_train=100, n_test=40, budgets=(4,))
    res = run_keypoints(cfg, run_root=run_root, progress=False)
    assert res.dataset == "mnist" and "mnist" in res.experiment.path.name
    x = res.test_images.numpy() * 255  # the file's bytes (the digits have 17 grey levels, none above 40 but the bars')
    assert (
        res.test_images.shape[1:] == (1, 28, 28)
        and np.allclose(x, np.round(x), atol=1e-3)
        and (np.unique(np.round(x)).size > 17)
    )
    monkeypatch.setenv("GEOVIZ_DATA", str(tmp_path / "empty"))
    assert run_keypoints(cfg, run_root=run_root, progress=False).dataset == "digits"
