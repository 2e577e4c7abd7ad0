"""SEISM exactness: ground truth from label images, truncated 8-bit predictions, single-precision NMS, protocols."""

from contextlib import nullcontext

import numpy as np
import pytest
import torch
from skimage.morphology import thin as skimage_thin

from scenemtl.data.transforms import pad_sample
from scenemtl.engine.evaluate import format_report, results_report
from scenemtl.engine.export import png_array
from scenemtl.metrics import _boundary_kernels as kernels
from scenemtl.metrics.boundary import (
    BoundaryMetric,
    boundary_counts,
    conv_tri,
    nms,
    relabel,
    sak_nms,
    seg2bmap,
    seism_ground_truth,
    to_levels,
)
from scenemtl.tasks.protocols import PROTOCOLS, task_options
from scenemtl.tasks import build_task

F32 = np.float32


def lines(rows: list[str]) -> np.ndarray:
    """A hand-drawn boolean map: '#' is set."""
    return np.array([[ch == "#" for ch in row] for row in rows])


def test_seg2bmap_of_a_one_pixel_line_is_its_outline_and_a_band_gives_two_lines():
    line = np.zeros((6, 7), np.uint8)
    line[2] = 255  # NYUD's edge PNG read as a label image
    assert np.array_equal(seg2bmap(line), lines([".......", "#######", "#######", ".......", ".......", "......."]))
    band = np.zeros((7, 7), np.uint8)
    band[2:4] = 255
    expected = lines([".......", "#######", ".......", "#######", ".......", ".......", "......."])
    assert np.array_equal(seg2bmap(band), expected)
    # thinned: the 2-px outline of the line becomes one line, the band's two lines stay two
    thinned = seism_ground_truth(line)
    assert np.array_equal(thinned, skimage_thin(seg2bmap(line)))
    assert len(set(np.nonzero(thinned)[0])) == 1 and thinned.sum() >= 5  # one line
    assert np.array_equal(seism_ground_truth(band), expected)


def test_seg2bmap_at_junctions_and_image_borders():
    labels = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 3, 3]])
    assert np.array_equal(seg2bmap(labels), lines([".#..", "####", "...."]))
    right = np.zeros((4, 5), np.uint8)
    right[:, -1] = 255  # a line on the right border: only the column before it (the last column looks south)
    assert np.array_equal(seg2bmap(right), lines(["...#.", "...#.", "...#.", "...#."]))
    left = np.zeros((4, 5), np.uint8)
    left[:, 0] = 255  # on the left border: the line itself
    assert np.array_equal(seg2bmap(left), lines(["#....", "#....", "#....", "#...."]))


def test_relabel_splits_regions_only_where_4_connectivity_breaks_and_keeps_the_boundaries():
    labels = np.array([[1, 2, 2], [2, 1, 2], [2, 2, 1]])
    out = relabel(labels)
    assert out[0, 0] != out[1, 1] != out[2, 2] and out[0, 0] != out[2, 2]  # diagonal touches are not connected
    assert out[0, 1] == out[0, 2] == out[1, 2] and out[1, 0] == out[2, 0] == out[2, 1]
    assert out[0, 1] != out[1, 0]  # the two 2-regions meet only diagonally across the 1s
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 3, (rng.integers(2, 20), rng.integers(2, 20)))
        assert np.array_equal(seg2bmap(relabel(labels)), seg2bmap(labels))


def single_pixel_counts(probability: float, quantize: str, strict: bool = True) -> np.ndarray:
    prediction = np.zeros((5, 5))
    prediction[2, 2] = probability
    gt = np.zeros((5, 5), bool)
    gt[2, 2] = True
    return boundary_counts(prediction, gt, 0.011, np.array([0.2]), apply_nms="none", strict=strict, quantize=quantize)[0]


def test_truncation_and_rounding_at_the_exact_threshold():
    p = 51.5 / 255  # 255·p = 51.5: truncated to 51 (= 0.2 exactly), rounded to 52
    assert to_levels(np.array([p]), "truncate")[0] == 51 and to_levels(np.array([p]), "round")[0] == 52
    assert single_pixel_counts(p, "truncate")[3] == 0  # single(51/255) > single(0.2) is false
    assert single_pixel_counts(p, "round")[3] == 1
    assert float(F32(51) / F32(255)) > 0.2  # compared in double it would count: SEISM compares in single
    assert single_pixel_counts(p, "truncate", strict=False)[3] == 1  # read_one_png: 51/255 >= 0.2 in double
    assert png_array(torch.tensor([[[p, 0.999, 1.0]]]), "edge").tolist() == [[51, 254, 255]]
    assert png_array(torch.tensor([[[p]]]), "edge", "round").tolist() == [[52]]


def conv_tri_by_the_recurrence(image: np.ndarray, radius: int) -> np.ndarray:
    """convTri's running sums written out with float32 scalars (an independent transcription)."""
    h, w = image.shape
    r = radius + 1
    nrm = F32(1) / F32(r**4)

    def column(values):
        out = np.empty(h, F32)
        t = u = values[0]
        for j in range(1, r):
            t = F32(t + values[j])
            u = F32(u + t)
        u, t = F32(F32(2) * u - t), F32(0)
        out[0] = u
        for j in range(1, h):
            a = values[r - j] if j <= r else values[j - r - 1]
            b = values[r - 1 + j] if j < h - r + 1 else values[2 * h - r - j]
            t = F32(t + F32(F32(a + b) - F32(2) * values[j - 1]))
            u = F32(u + t)
            out[j] = u
        return out

    result = np.empty((h, w), F32)
    t = image[:, 0].copy()
    u = t.copy()
    for i in range(1, r):
        t = (t + image[:, i]).astype(F32)
        u = (u + t).astype(F32)
    u = (nrm * ((F32(2) * u).astype(F32) - t)).astype(F32)
    t = np.zeros(h, F32)
    result[:, 0] = column(u)
    for i in range(1, w):
        left = image[:, i - 1 - r] if i > r else image[:, r - i]
        right = image[:, i - 1 + r] if i <= w - r else image[:, 2 * w - r - i]
        t = (t + ((left + right).astype(F32) + (F32(-2) * image[:, i - 1]).astype(F32))).astype(F32)
        u = (u + (nrm * t).astype(F32)).astype(F32)
        result[:, i] = column(u)
    return result


def test_conv_tri_is_the_running_sum_in_float32():
    rng = np.random.default_rng(1)
    image = (rng.integers(0, 256, (14, 19)) / 255).astype(F32)
    ours = conv_tri(image, 4)
    assert np.array_equal(ours, conv_tri_by_the_recurrence(image, 4))
    kernel = np.array([1, 2, 3, 4, 5, 4, 3, 2, 1]) / 25
    padded = np.pad(image.astype(float), 4, mode="symmetric")
    exact = np.array([[np.sum(np.outer(kernel, kernel) * padded[r : r + 9, c : c + 9]) for c in range(19)] for r in range(14)])
    assert np.abs(ours - exact).max() < 1e-6 and not np.array_equal(ours, exact.astype(F32))


def float32_tie():
    """An edge value e and a neighbour n with single(e·1.01) < n ≤ e·1.01 in double."""
    for k in range(1, 256):
        e = F32(k) / F32(255)
        product32 = F32(e * F32(1.01))
        n = np.nextafter(product32, F32(2))
        if n <= float(e) * 1.01:
            return e, n, product32
    raise AssertionError("no tie found")


def test_nms_compares_in_single_precision_and_fades_borders_in_float32():
    e, n, product32 = float32_tie()
    # columns vary, rows do not: the orientation is exactly 0, neighbours are the left and right pixels
    profile = np.zeros(15, F32)
    profile[6], profile[7] = n, e
    image = np.tile(profile, (11, 1))
    assert np.all(kernels.orientation(conv_tri(image, 4)) == 0)
    out = nms(image)
    assert out[5, 7] == 0  # single(e·1.01) < n: suppressed (a double comparison would keep it)
    profile[6] = product32  # equal: e·m < n is false, kept
    kept = nms(np.tile(profile, (11, 1)))
    assert kept[5, 7] == e
    assert kept[2, 7] == F32(e * (F32(2) / F32(5)))  # row 2 of the top border fade s = 5, in float32
    assert kept[0, 7] == 0


def test_sak_pre_pass_returns_rounded_levels():
    rng = np.random.default_rng(0)
    image = (rng.integers(0, 256, (20, 24)) / 255).astype(F32)
    levels = sak_nms(image)
    assert levels.dtype == np.uint8 and levels.shape == image.shape
    smooth = kernels.conv_tri1(image, F32(2))
    suppressed = kernels.nms(smooth, kernels.orientation(conv_tri(smooth, 4)), 4, 5, F32(1.01))
    # MATLAB's uint8(E*255): the product in single, rounded half away from zero
    assert np.array_equal(levels, np.floor((suppressed * F32(255)).astype(np.float64) + 0.5).astype(np.uint8))
    assert levels.max() > 0 and (levels == 0).mean() > 0.5  # the pre-pass suppressed most pixels, kept some


def test_metric_scores_against_the_label_image_and_ignores_padding():
    labels = np.zeros((12, 16), np.int64)
    labels[5:7] = 255  # a 2-px band: two ground-truth lines for SEISM, one thinned line as a training target
    target = torch.from_numpy((labels == 255).astype(np.float32))[None, None]
    prediction = target.clone()
    sample = {"image": torch.zeros(3, 12, 16), "edge": target[0], "edge_labels": torch.from_numpy(labels)[None], "meta": {}}
    tasks = {"edge": build_task("edge", {})}
    padded = pad_sample(sample, tasks, (16, 20), centre=True)
    assert padded["edge_labels"][0, 0, 0] == -1 and padded["edge_labels"].dtype == torch.int64
    pad_prediction = torch.nn.functional.pad(prediction, (2, 2, 2, 2))
    seism = BoundaryMetric(0.011, apply_nms="none")
    seism.update(pad_prediction, padded["edge"][None], ids=["a"], eval_target=padded["edge_labels"][None])
    plain = BoundaryMetric(0.011, apply_nms="none", ground_truth="target")
    plain.update(pad_prediction, padded["edge"][None], ids=["a"], eval_target=padded["edge_labels"][None])
    assert seism.counts[0, 1] == 32  # both lines of the band's outline
    assert plain.counts[0, 1] == skimage_thin(labels == 255).sum() < 17  # the band thinned to one line
    assert "seg2bmap" in seism.variant and "training target" in plain.variant


def test_metric_is_deterministic_and_the_same_in_one_process_or_two():
    rng = np.random.default_rng(3)
    labels = torch.from_numpy(np.kron(rng.integers(0, 4, (4, 3, 3)), np.ones((1, 8, 8), np.int64)))[:, None]
    probability = torch.from_numpy(rng.random((4, 1, 24, 24)).astype(np.float32))
    target = (torch.from_numpy(np.stack([seg2bmap(x[0].numpy()) for x in labels]))[:, None]).float()
    whole = BoundaryMetric(0.011)
    whole.update(probability, target, ids=list("abcd"), eval_target=labels)
    again = BoundaryMetric(0.011)
    again.update(probability, target, ids=list("abcd"), eval_target=labels)
    halves = [BoundaryMetric(0.011), BoundaryMetric(0.011)]
    for part, rows in zip(halves, (slice(0, 2), slice(2, 4))):
        part.update(probability[rows], target[rows], ids=list("abcd")[rows], eval_target=labels[rows])
    halves[0].merge(halves[1])
    assert whole.compute() == again.compute() == halves[0].compute()


def test_every_protocol_resolves_to_its_documented_variants(tmp_path, monkeypatch):
    monkeypatch.delenv("SCENEMTL_SEISM", raising=False)
    expected = {
        "invpt": ("SEISM HED 101 thresholds, >, NMS", "invpt"),
        "mtinet": ("SEISM MTI-Net 99 thresholds, >=, maxDist", "mtinet"),
        "atrc": ("SEISM HED 101 thresholds, >, NMS", "pooled"),
        "sak": ("SEISM MTI-Net 99 thresholds, >=, SAK NMS pre-pass", "pooled"),
    }
    for name, (edge_variant, saliency_protocol) in expected.items():
        edge = build_task("edge", task_options(name, "pascal_context", "edge", {}))
        with pytest.warns(UserWarning, match="SCENEMTL_SEISM") if name in ("invpt", "mtinet") else nullcontext():
            metric = edge.metric()
        assert metric.variant.startswith(edge_variant) and "maxDist 0.0075" in metric.variant, metric.variant
        assert "truncate 8-bit" in metric.variant
        saliency = build_task("saliency", task_options(name, "pascal_context", "saliency", {}))
        assert saliency.protocol == saliency_protocol
        if name in ("invpt", "mtinet"):
            assert "all images" in metric.variant and "SCENEMTL_SEISM" in metric.variant
    assert task_options("invpt", "nyud", "edge", {})["max_dist"] == 0.011
    assert task_options("invpt", "nyud", "edge", {"nms": "none"})["nms"] == "none"  # the config wins
    assert task_options(None, "nyud", "edge", {"nms": "none"}) == {"nms": "none"}
    # with a SEISM checkout, PASCAL boundaries are scored on test_new only
    listing = tmp_path / "gt_sets" / "PASCALContext"
    listing.mkdir(parents=True)
    (listing / "test_new.txt").write_text("2008_000003\n2008_000007\n")
    monkeypatch.setenv("SCENEMTL_SEISM", str(tmp_path))
    edge = build_task("edge", task_options("invpt", "pascal_context", "edge", {}))
    assert edge.image_ids == {"2008_000003", "2008_000007"}
    assert set(PROTOCOLS) == {"invpt", "mtinet", "atrc", "densemtl", "densemtl_legacy", "mtan", "sak"}
    assert build_task("normals", task_options("densemtl_legacy", "synthia", "normals", {})).metric().pooling == "densemtl_columns"


def test_reports_name_the_protocol():
    metric = BoundaryMetric(0.011)
    metric.eval_protocol = "invpt"
    report = results_report({"edge": metric})
    assert report["protocol"] == "invpt"
    assert format_report(report).startswith("Protocol **invpt**: InvPT")


@pytest.mark.parametrize(
    "protocol, depth, normals",
    [
        ("densemtl", ("per-image mean", "0.001 < gt < 80 m, prediction clamped"), "per-image mean"),
        ("mtan", ("per-batch mean",), "per-batch mean"),
        ("invpt", ("pixel-pooled",), "pixel-pooled"),
    ],
)
def test_depth_and_normals_variants_of_each_protocol(protocol, depth, normals):
    depth_variant = build_task("depth", task_options(protocol, "nyud", "depth", {})).metric().variant
    assert all(part in depth_variant for part in depth), depth_variant
    assert build_task("normals", task_options(protocol, "nyud", "normals", {})).metric().variant.startswith(normals)
    segmentation = build_task("semseg", task_options(protocol, "nyud", "semseg", {}), {"semseg": ["a", "b"]})
    assert not segmentation.per_image
