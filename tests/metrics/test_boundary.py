"""Boundary F-measure: thinning, NMS and matching against independent implementations, ODS/OIS/AP by hand."""

import math

import networkx as nx
import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.morphology import thin as skimage_thin

from scenemtl.metrics import _boundary_kernels as kernels
from scenemtl.metrics.boundary import (
    BoundaryMetric,
    average_precision,
    boundary_counts,
    disc_offsets,
    f_measure,
    nms,
    orientation,
    seg2bmap,
    thin,
)

import pyEdgeEval._lib as bsds  # noqa: E402  (the BSDS matcher and NMS ports: a test dependency)


def scene(seed: int, height: int = 60, width: int = 80):
    """A label map's boundary and a noisy, blurred, shifted prediction of it."""
    rng = np.random.default_rng(seed)
    labels = ndimage.zoom(rng.integers(0, 5, (5, 6)), (height / 5, width / 6), order=0)[:height, :width]
    boundary = seg2bmap(labels)
    shifted = ndimage.shift(boundary.astype(float), (rng.integers(-3, 4), rng.integers(-3, 4)), order=0)
    probability = ndimage.gaussian_filter(shifted, 1.2)
    probability = np.clip(probability / probability.max() + 0.25 * rng.random(probability.shape) - 0.05, 0, 1)
    return probability, boundary


def test_seg2bmap_marks_label_changes_to_the_east_south_and_south_east():
    labels = np.array([[0, 0, 1], [0, 0, 1], [2, 2, 2]])
    expected = np.array([[0, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=bool)  # last column: only a change to the south
    assert np.array_equal(seg2bmap(labels), expected)


def test_thinning_equals_scikit_image_matlab_algorithm():
    rng = np.random.default_rng(0)
    for _ in range(100):
        mask = rng.random((rng.integers(3, 50), rng.integers(3, 50))) < rng.uniform(0.1, 0.9)
        assert np.array_equal(thin(mask), skimage_thin(mask))


def test_nms_equals_the_bsds_port_of_edges_nms_mex():
    for seed in range(5):
        probability, _ = scene(seed)
        edges = (np.round(probability * 255) / 255).astype(np.float32)
        angle = orientation(edges)
        reference = bsds.nms(edges.astype(np.float64), angle, 1, 5, 1.01)
        ours = kernels.nms(edges, angle.astype(np.float32), 1, 5, np.float32(1.01))
        same = np.isclose(ours, reference, atol=1e-5)
        assert same.mean() > 0.999, same.mean()  # float32 vs float64 ties may flip a rare pixel
        assert np.array_equal(nms(edges), ours)


def bsds_counts(prediction: np.ndarray, boundary: np.ndarray, max_dist: float) -> tuple[int, int]:
    match_pred, match_gt, _, _ = bsds.correspond_pixels(prediction, boundary, max_dist)
    return int((match_pred > 0).sum()), int((match_gt > 0).sum())


def our_matches(prediction: np.ndarray, boundary: np.ndarray, max_dist: float) -> int:
    counts = boundary_counts(prediction.astype(float), boundary, max_dist, np.array([0.5]), apply_nms=False, quantize="none")
    return int(counts[0, 0])


def test_matching_is_maximum_cardinality_and_never_below_bsds():
    for seed in range(8):
        probability, boundary = scene(seed)
        prediction = thin(probability > 0.5)
        gt = thin(boundary)
        ours = our_matches(prediction, boundary, 0.011)
        matched_pred, matched_gt = bsds_counts(prediction, gt, 0.011)
        assert ours >= max(matched_pred, matched_gt) - 0  # BSDS's random outlier edges can only lose matches
        assert ours - min(matched_pred, matched_gt) <= max(6, 0.005 * gt.sum()), (ours, matched_pred, matched_gt)
        # the exact maximum matching of the same radius graph, by networkx
        radius = 0.011 * math.hypot(*gt.shape)
        graph = nx.Graph()
        pred_pixels = list(zip(*np.nonzero(prediction)))
        gt_set = set(zip(*np.nonzero(gt)))
        rows, cols = disc_offsets(radius)
        for p in pred_pixels:
            for dr, dc in zip(rows, cols):
                q = (p[0] + dr, p[1] + dc)
                if q in gt_set:
                    graph.add_edge(("p", p), ("g", q))
        top = [n for n in graph if n[0] == "p"]
        assert ours == len(nx.bipartite.maximum_matching(graph, top_nodes=top)) // 2


def test_f_measure_of_generated_maps_is_the_bsds_matchers_or_slightly_above():
    # BSDS's matcher adds random outlier edges, so its count varies from call to call (with the
    # number of earlier calls in the process) and can only lose matches against our maximum
    # matching. Over 40 repeated calls on these maps the gap was 0 to 1.04e-3 in F.
    thresholds = np.array([0.3, 0.5, 0.7])
    ours = np.zeros((3, 4))
    reference = np.zeros((3, 4))
    for seed in range(6):
        probability, boundary = scene(seed, 96, 128)
        ours += boundary_counts(probability, boundary, 0.0075, thresholds, apply_nms=False, quantize="none")
        gt = thin(boundary)
        for k, t in enumerate(thresholds):
            prediction = thin(probability > t)
            matched_pred, matched_gt = bsds_counts(prediction, gt, 0.0075)
            reference[k] += (matched_gt, gt.sum(), matched_pred, prediction.sum())
    gap = f_measure(ours)[2] - f_measure(reference)[2]
    assert np.all(gap >= -1e-12) and np.all(gap <= 2.5e-3), gap


def test_counts_by_hand_shift_within_and_beyond_the_match_distance():
    boundary = np.zeros((50, 50), dtype=bool)
    boundary[25, 5:45] = True  # 40 pixels
    radius = 0.011 * math.hypot(50, 50)  # 0.78 px: only exact positions match
    near = np.zeros((50, 50))
    near[25, 5:45] = 1
    counts = boundary_counts(near, boundary, 0.011, np.array([0.5]), apply_nms=False, quantize="none")
    assert counts[0].tolist() == [40, 40, 40, 40]
    far = np.zeros((50, 50))
    far[27, 5:45] = 1  # 2 px away, beyond 0.78 px
    counts = boundary_counts(far, boundary, 0.011, np.array([0.5]), apply_nms=False, quantize="none")
    assert counts[0].tolist() == [0, 40, 0, 40]
    wide = boundary_counts(far, boundary, 0.06, np.array([0.5]), apply_nms=False, quantize="none")  # 4.2 px
    assert wide[0].tolist() == [40, 40, 40, 40] and radius < 1


def test_f_measure_conventions_for_empty_sides():
    precision, recall, f = f_measure(np.array([[0, 10, 0, 0], [0, 0, 0, 5], [5, 10, 5, 20]]))
    assert (precision[0], recall[0], f[0]) == (1.0, 0.0, 0.0)  # nothing predicted
    assert (precision[1], recall[1], f[1]) == (0.0, 1.0, 0.0)  # no ground truth
    assert f[2] == pytest.approx(2 * 0.25 * 0.5 / 0.75)


def test_average_precision_is_seism_general_ap():
    recall = np.array([0.9, 0.5, 0.1])
    precision = np.array([0.5, 0.8, 1.0])
    samples = np.interp(np.arange(10, 91) / 100, recall[::-1], precision[::-1])  # recall 0.10 … 0.90
    assert average_precision(precision, recall) == pytest.approx(samples.sum() / 100)


def test_ods_pools_images_ois_takes_each_images_best():
    metric = BoundaryMetric(max_dist=0.011)  # the pooled statistics are set by hand
    metric.counts = torch.tensor([[8.0, 10, 8, 16], [6, 10, 6, 8], [2, 10, 2, 2]]).double()
    metric.ois_counts = torch.tensor([13.0, 20, 13, 20]).double()
    metric.images = torch.tensor(2.0).double()
    metric.thresholds = np.array([0.1, 0.5, 0.9])
    result = metric.compute()
    f = [2 * 0.5 * 0.8 / 1.3, 2 * 0.75 * 0.6 / 1.35, 2 * 1.0 * 0.2 / 1.2]
    assert result["odsF"] == pytest.approx(max(f) * 100)
    assert result["ods_threshold"] == 0.5
    assert result["oisF"] == pytest.approx(65.0)


def test_metric_streams_merges_crops_padding_and_skips_unlabelled_images():
    probability, boundary = scene(3)
    target = torch.from_numpy(boundary.astype(np.float32))[None, None]
    prediction = torch.from_numpy(probability.astype(np.float32))[None, None]
    padded_target = torch.nn.functional.pad(target, (3, 5, 2, 4), value=255.0)
    padded_prediction = torch.nn.functional.pad(prediction, (3, 5, 2, 4), value=0.9)
    plain, padded = BoundaryMetric(), BoundaryMetric()
    plain.update(prediction, target)
    padded.update(padded_prediction, padded_target)
    padded.update(torch.rand(1, 1, 10, 10), torch.full((1, 1, 10, 10), 255.0))  # all ignore: skipped
    assert padded.compute()["odsF"] == pytest.approx(plain.compute()["odsF"])
    assert int(padded.images) == 1
    other = BoundaryMetric()
    other.update(prediction, target)
    plain.merge(other)
    assert plain.compute()["odsF"] == pytest.approx(other.compute()["odsF"])  # two equal images: same F
    curves = plain.curves()
    assert len(curves["precision"]) == 101 and curves["threshold"][0] == 0.001


def test_perfect_prediction_scores_100_without_nms():
    _, boundary = scene(5)
    exact, seism = BoundaryMetric(apply_nms=False), BoundaryMetric()
    for metric in (exact, seism):
        metric.update(torch.from_numpy(boundary.astype(np.float32))[None, None], torch.from_numpy(boundary.astype(np.float32))[None, None])
    assert exact.compute()["odsF"] == pytest.approx(100.0) and exact.compute()["oisF"] == pytest.approx(100.0)
    # with SEISM's NMS, boundary pixels within 5 px of the image border fade out, so recall drops a little
    assert 90 < seism.compute()["odsF"] < 100


def test_a_listed_subset_of_images_is_scored_alone():
    probability, boundary = scene(1)
    other, other_boundary = scene(2)
    prediction = torch.from_numpy(np.stack([probability, other]).astype(np.float32))[:, None]
    target = torch.from_numpy(np.stack([boundary, other_boundary]).astype(np.float32))[:, None]
    subset, alone = BoundaryMetric(image_ids={"b"}), BoundaryMetric()
    subset.update(prediction, target, ids=["a", "b"])
    alone.update(prediction[1:], target[1:])
    assert int(subset.images) == 1 and subset.compute()["odsF"] == alone.compute()["odsF"]
    with pytest.raises(ValueError, match="ids"):
        subset.update(prediction, target)
