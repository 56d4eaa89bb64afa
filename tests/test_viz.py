import numpy as np
import plotly.graph_objects as go
import torch

from geoviz.capture import collect, receptive_field
from geoviz.models import build_model
from geoviz.projection import as_embedding
from geoviz.viz import EmbeddingExplorer, class_colors, embedding_scatter, patch_figure, training_curves
from geoviz.viz.style import OKABE_ITO, TOL_MUTED


def test_palettes_are_the_cvd_safe_sets_and_distinct():
    assert class_colors(4) == OKABE_ITO[:4]
    ten = class_colors(10)
    assert ten == TOL_MUTED and len(set(ten)) == 10


def test_figures_have_titles_units_and_class_names():
    xy = np.random.default_rng(0).normal(size=(30, 2))
    fig = embedding_scatter(xy, np.arange(30) % 3, ["square", "circle", "star"], title="t")
    assert fig.layout.title.text == "t" and fig.layout.xaxis.title.text == "UMAP 1 (a.u.)"  # graph unknown: no word
    said = embedding_scatter(as_embedding(xy, "approximate 15-NN graph (NN-descent)"), title="t")
    assert said.layout.title.text == "t<br><sup>approximate 15-NN graph (NN-descent)</sup>"  # what project used
    assert [t.name for t in fig.data] == ["square", "circle", "star"]
    assert sorted(np.concatenate([t.customdata for t in fig.data]).tolist()) == list(range(30))
    cont = embedding_scatter(xy, values=np.arange(30), value_name="norm")
    assert len(cont.data) == 1 and cont.data[0].marker.colorscale is not None
    p = patch_figure(torch.rand(3, 16, 16), (2, 3, 9, 10))
    assert p.layout.xaxis.title.text == "x (px)" and p.layout.shapes[0].x0 == 1.5
    c = training_curves([{"epoch": 1, "train_acc": 0.5, "val_acc": 0.4, "train_loss": 1.0}])
    assert c.layout.yaxis.title.text == "accuracy (fraction)"


def test_explorer_links_points_to_their_receptive_field():
    torch.manual_seed(0)
    m = build_model("resnet8", 3).eval()
    data = torch.utils.data.TensorDataset(torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2]))
    bank = collect(m, data, ["layer1", "layer3"], positions_per_image=4)
    coords = {l: np.random.default_rng(1).normal(size=(24, 2)) for l in bank.layers}
    rfs = {l: receptive_field(m, l, 32) for l in bank.layers}
    app = EmbeddingExplorer(coords, bank, data.tensors[0], ["a", "b", "c"], rfs)
    assert isinstance(app.scatter, go.FigureWidget) and len(app.scatter.data) == 3
    box = app.select(13)
    b, y, x = bank.index["layer3"][13]
    assert box == rfs["layer3"].box(y, x) and app.patch.layout.shapes[0].x0 == box[0] - 0.5
    assert f"image {b}" in app.patch.layout.title.text
    app.colour.value = "feature norm"
    assert len(app.scatter.data) == 1 and app.scatter.data[0].marker.colorscale is not None
    app.layer.value = "layer1"
    app.select(0)
    assert "layer1" in app.info.value


def test_keypoint_explorer_controls_change_the_reconstruction(run_root):
    from geoviz.experiments.keypoints import KeypointsConfig, run_keypoints
    from geoviz.viz import KeypointExplorer

    res = run_keypoints(
        KeypointsConfig.from_profile("smoke", setups=("AF4",), max_keypoints=6), run_root=run_root, progress=False
    )
    app = KeypointExplorer(res)

    def shown():
        return sum(len(app.fig.data[1 + t].x) for t in range(4))

    full = shown()
    assert 0 < full <= 6 and "keypoints kept of" in app.fig.layout.title.text
    app.keep.value = 2
    assert shown() == min(2, full)
    app.keep.value = 6
    n0 = len(app.fig.data[1].x)
    app.types[0].value = False  # switch feature type 0 off
    assert len(app.fig.data[1].x) == 0 and shown() == full - n0
    expected = res.reconstruct("AF4", 0, keep=6, types=[1, 2, 3])
    assert np.allclose(app.fig.data[6].z[..., 0], np.clip(expected[0], 0, 1) * 255, atol=1)


def test_angle_explorer_pair_picker_draws_that_pairs_trajectory():
    from test_angles import synthetic_angles_result

    from geoviz.viz import AngleConfusionExplorer

    res = synthetic_angles_result()
    app = AngleConfusionExplorer(res)
    assert app.pair.value == (0, 1)  # the most confused test pair
    app.pair.value = (2, 3)
    traj = res.runs[0].pair_trajectory(2, 3)
    assert "c – d through training" in app.trajectory.layout.title.text
    assert list(app.trajectory.data[0].y) == traj["angle"] and list(app.trajectory.data[1].y) == traj["confusion"]
    assert "c ↔ d" in app.grid.layout.title.text
    assert "<b>pair</b>: c – d" in app.static_html()  # the snapshot the exported HTML shows


def test_transfer_bars_show_every_set_the_floors_and_the_verdicts():
    from geoviz.viz import transfer_bars

    table = [
        {
            "experiment": e,
            "architecture": "resnet14",
            "start": s,
            "chance": 0.5,
            "train_acc": 0.9,
            **{f"{t}_acc": 0.7 for t in ("style", "size", "both")},
            **{f"{t}_cc": 0.5 for t in ("style", "size", "both")},
        }
        for e in ("E1", "E3")
        for s in ("pretrained", "scratch")
    ]
    verdicts = [
        {
            "hypothesis": "H1 local transfers better than global",
            "transfer_set": "style",
            "scope": "overall",
            "verdict": "undecided",
        },
        {
            "hypothesis": "H1 local transfers better than global",
            "transfer_set": "style",
            "scope": "resnet14",
            "verdict": "supported",
        },
    ]
    floors = [
        {
            "experiment": "E1",
            "shortcut_floor": 0.95,
            "shortcut_floor_style": 0.6,
            "shortcut_floor_size": float("nan"),
            "shortcut_floor_both": 0.7,
        },
        {"experiment": "E3", "shortcut_floor": 0.55},
    ]
    fig = transfer_bars(table, verdicts, title="T", floors=floors)
    names = [t.name for t in fig.data[:7]]
    assert names[:6] == [
        "training distribution",
        "transfer: style",
        "transfer: size",
        "transfer: both",
        "chance",
        "shortcut floor",
    ]
    assert list(fig.data[5].y) == [0.95, 0.55] and "H1 (style): <b>undecided</b>" in fig.layout.title.text
    assert list(fig.data[6].y) == [0.7, None]  # the highest set's floor, NaN-safe; none where no set has one
    assert fig.data[1].customdata[0][1] == 0.6 and fig.data[3].customdata[0][1] == 0.7  # each set's floor on its bars
    assert "supported" not in fig.layout.title.text  # per-network rows stay out of the headline
    assert fig.layout.yaxis.title.text == "test accuracy (fraction)"


def test_rate_distortion_plots_both_axes_with_seed_spread():
    from geoviz.viz import rate_distortion

    rows = [
        {
            "method": m,
            "setting": f"{k}",
            "nonzeros_per_image": float(k),
            "bits_per_image": 20.0 * k,
            "mse": 0.1 / k,
            "mse_std": 0.01,
        }
        for m in ("AF4 (retrained)", "sparse coding, OMP")
        for k in (4, 8, 16)
    ]
    fig = rate_distortion(rows, title="RD", floor=0.05)
    assert len(fig.data) == 4 and [t.name for t in fig.data] == ["AF4 (retrained)"] * 2 + ["sparse coding, OMP"] * 2
    assert list(fig.data[1].x) == [80.0, 160.0, 320.0] and list(fig.data[0].error_y.array) == [0.01] * 3
    assert fig.layout.xaxis2.title.text.startswith("bits per image") and fig.layout.xaxis.type == "log"


def test_pruning_figures_and_the_correlation_explorer():
    import torch
    from torch import nn

    from geoviz.methods.pruning import channel_correlation, layer_spectra, prunable_layers
    from geoviz.viz import CorrelationExplorer, accuracy_vs_flops
    from geoviz.viz import layer_spectra as spectra_figure

    table = [
        {
            "method": m,
            "speedup": s,
            "flops": f,
            "acc_pruned": a,
            "acc_pruned_std": 0.01,
            "acc_finetuned": a + 0.1,
            "acc_finetuned_std": 0.02,
        }
        for m, s, f, a in [
            ("unpruned", 1.0, 8e7, 0.8),
            ("l1", 2.0, 4e7, 0.2),
            ("l1", 3.0, 2.7e7, 0.1),
            ("decorrelated-outputs", 2.0, 4e7, 0.6),
        ]
    ]
    fig = accuracy_vs_flops(table, title="T", chance=0.1)
    names = [t.name for t in fig.data]
    assert (
        names.count("l1") == 2 and names.count("unpruned") == 2 and list(fig.data[0].x) == [27.0, 40.0]
    )  # sorted by FLOPs
    assert (
        fig.layout.xaxis.title.text == "FLOPs per image (millions, measured)"
        and fig.layout.yaxis.title.text == "test accuracy (fraction)"
    )
    net = nn.Sequential()
    net.conv1, net.bn1, net.conv2, net.bn2 = (
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.Conv2d(8, 6, 3, padding=1),
        nn.BatchNorm2d(6),
    )
    torch.manual_seed(0)
    sp = layer_spectra(net.eval(), torch.randn(16, 3, 8, 8), prunable_layers(net, ["conv1", "conv2"]), progress=False)
    fig = spectra_figure(sp, {"conv1": 3, "conv2": None}, title="S")
    assert [t.name for t in fig.data if t.showlegend is not False] == ["conv1", "conv2"] and list(fig.data[1].x) == [3]
    app = CorrelationExplorer({"outputs": sp}, channel_correlation, layer="conv1")
    before = np.array(app.fig.data[0].z)
    assert before.shape == (8, 8) and "conv1" in app.fig.layout.title.text
    app.layer.value = "conv2"
    assert np.array(app.fig.data[0].z).shape == (6, 6) and "conv2" in app.fig.layout.title.text
    assert np.allclose(np.array(app.fig.data[1].z), np.diag(np.diag(np.array(app.fig.data[1].z))), atol=1e-6)


def test_robustness_figures_label_their_axes_and_values():
    from geoviz.viz import group_error_bars, robustness_heatmap

    m = np.arange(6.0).reshape(3, 2)
    fig = robustness_heatmap(m, ["fog", "snow", "contrast"], [1, 5], title="H")
    assert (
        np.array_equal(np.array(fig.data[0].z), m)
        and list(fig.data[0].y) == ["fog", "snow", "contrast"]
        and list(fig.data[0].x) == ["1", "5"]
    )
    assert fig.layout.xaxis.title.text.startswith("severity") and fig.data[0].colorbar.title.text == "MAE (px)"
    rows = [
        {"model": "teacher", "clean": 1.0, "groups": {"noise": 2.0, "blur": 1.5}},
        {"model": "s", "clean": 1.2, "groups": {"noise": 2.5, "blur": 2.0}},
    ]
    fig = group_error_bars(rows, title="G")
    assert (
        [t.name for t in fig.data] == ["teacher", "s"]
        and list(fig.data[1].x) == ["clean", "noise", "blur"]
        and list(fig.data[1].y) == [1.2, 2.5, 2.0]
    )


def test_image_mosaic_as_png_holds_the_same_pixels_in_far_fewer_bytes():
    import base64
    import io
    import json

    from PIL import Image

    rng = np.random.default_rng(0)
    images = [np.kron(rng.random((3, 8, 8)) > 0.5, np.ones((1, 4, 4))).astype(np.float32) for _ in range(6)]
    from geoviz import viz

    arr = viz.image_mosaic(images, [str(i) for i in range(6)], n_cols=3, title="t")
    png = viz.image_mosaic(images, [str(i) for i in range(6)], n_cols=3, title="t", png=True)
    head, data = png.data[0].source.split(",", 1)
    assert head == "data:image/png;base64"
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
    np.testing.assert_array_equal(decoded, np.asarray(arr.data[0].z))
    assert len(json.dumps(png.to_plotly_json(), default=str)) * 5 < len(json.dumps(arr.to_plotly_json(), default=str))


def test_convergence_curves_draw_every_run_keyed_by_arm_and_seed():
    from geoviz.viz import convergence_curves

    runs = {
        ("ce-f1", 0): [{"epoch": 1, "val_acc": 0.2}, {"epoch": 2, "val_acc": 0.5}],
        "teacher": [{"epoch": 1, "val_acc": 0.7}],
    }
    fig = convergence_curves(runs, title="t", floor=("chance", 0.1))
    assert [tr.name for tr in fig.data] == ["ce-f1, seed 0", "teacher"] and list(fig.data[0].y) == [0.2, 0.5]
    assert list(convergence_curves(runs, title="t", key="missing").data) == []


def test_claims_table_shows_every_claim_with_its_interval_threshold_and_note():
    from geoviz.analysis.statistics import NAN, Claim
    from geoviz.viz import claims_table

    supported = Claim("a beats b", "accuracy, a minus b", 0.05, (0.01, 0.09), 0.01, 5, "seeds", "supported",
                      conditions={"fraction": 0.1}, extra={"threshold": -0.02})  # fmt: skip
    descriptive = Claim(
        "descriptive", "CKA difference", 0.3, (NAN, NAN), NAN, 96, "images", "undecided", "one pair of networks"
    )
    claims = [supported, descriptive]
    cells = claims_table(claims, title="claims").data[0].cells.values
    assert list(cells[0]) == ["a beats b", "descriptive"] and list(cells[1]) == ["fraction 0.1", ""]
    assert (
        cells[4][0] == "[+0.01, +0.09] vs -0.02" and cells[4][1] == "–" and list(cells[6]) == ["5 seeds", "96 images"]
    )
    assert list(cells[7]) == ["supported", "undecided"] and cells[8][1] == "one pair of networks"
