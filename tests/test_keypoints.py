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
                    if v > ae.threshold and v == d[i, k, max(0, yy - r) : yy + r + 1, max(0, xx - r) : xx + r + 1].max():
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
    fit(ae, torch.utils.data.TensorDataset(images, torch.zeros(16, dtype=torch.long)), objective="reconstruction", epochs=1, batch_size=8, lr=1e-2, optimizer="adamw")
    assert torch.equal(ae.encoder[0].weight.cpu(), w0.cpu())  # fit may have moved the model to a GPU
    f = line_filters(7)
    assert torch.allclose(f.flatten(1).sum(1), torch.zeros(4), atol=1e-6) and torch.allclose(f.flatten(1).norm(dim=1), torch.ones(4))
    assert f[0, 0, 3].sum() > 0 and f[2, 0, :, 3].sum() > 0  # 0°: the middle row; 90°: the middle column


def test_building_blocks_have_the_decoders_output_shape():
    ae = SparseKeypointAE("AF5")
    blocks = [ae.building_block(t) for t in range(5)]
    assert all(b.shape == (1, 28, 28) for b in blocks)
    assert ae.building_block(2, size=(20, 24)).shape == (1, 20, 24)
    with pytest.raises(ValueError, match=r"type must be in \[0, 5\)"):
        ae.building_block(5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(setup="AF3"), "unknown set-up 'AF3'"),
    (dict(setup="AF4", num_types=0), "K must be a whole number >= 1"),
    (dict(setup="MF4", num_types=5), "MF4 has exactly 4 fixed line filters"),
    (dict(setup="AF4", max_keypoints=0), "max_keypoints .* must be a whole number >= 1"),
    (dict(setup="AF4", threshold=-0.1), "threshold must be >= 0"),
    (dict(setup="AF4", window=4), "window must be an odd number"),
])
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
        omp = OrthogonalMatchingPursuit(n_nonzero_coefs=5, fit_intercept=False).fit(D, x[i].reshape(-1).double().numpy())
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
    train, val = get_dataset("mnist", "train", root=tmp_path, n_val=10), get_dataset("mnist", "val", root=tmp_path, n_val=10)
    assert (len(train), len(val)) == (30, 10) and np.bincount(labels_of(val).numpy()).tolist() == [1] * 10
    with pytest.raises(FileNotFoundError, match="MNIST not found in .*nowhere/MNIST/raw.*never downloads"):
        get_dataset("mnist", root=tmp_path / "nowhere")
    d = get_dataset("digits", "train")
    assert len(d) == 1257 and d[0][0].shape == (1, 28, 28) and d.classes[7] == "7"
