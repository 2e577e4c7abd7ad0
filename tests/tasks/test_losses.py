"""Each task's loss and post-processing against values computed by hand."""

import math

import pytest
import torch

from scenemtl.errors import ConfigError
from scenemtl.tasks import TASKS, build_task

CLASSES = {"semseg": ["a", "b", "c"], "human_parts": ["bg", "head"]}


def test_cross_entropy_ignores_255_and_averages_valid_pixels():
    task = build_task("semseg", {}, CLASSES)
    logits = torch.zeros(1, 3, 1, 3)
    logits[0, 0, 0, 0] = math.log(2)  # p(a) = 2/4 at pixel 0
    target = torch.tensor([[[0, 1, 255]]])
    # pixel 0: −log(2/4); pixel 1: −log(1/3); pixel 2 ignored
    expected = (-math.log(0.5) - math.log(1 / 3)) / 2
    assert task.loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


MAP_TASKS = [name for name in TASKS.names() if TASKS.get(name).is_map]  # det3d: tests/tasks/test_det3d.py


def test_losses_are_zero_without_valid_pixels_and_keep_a_gradient():
    for name in MAP_TASKS:
        task = build_task(name, {}, CLASSES)
        logits = torch.randn(1, task.out_channels, 2, 2, requires_grad=True)
        # every pixel carries the task's own "no label" marker (its pad value)
        if task.is_classification:
            target = torch.full((1, 2, 2), int(task.pad_value))
        else:
            target = torch.full((1, task.out_channels, 2, 2), float(task.pad_value))
        loss = task.loss(logits, target)
        assert loss.item() == 0.0, name
        loss.backward()
        assert torch.all(logits.grad == 0), name


def test_depth_l1_on_valid_pixels_only():
    task = build_task("depth", {})
    logits = torch.tensor([[[[1.0, 2.0], [5.0, -1.0]]]])
    target = torch.tensor([[[[2.0, 2.0], [0.0, float("nan")]]]])
    assert task.loss(logits, target).item() == pytest.approx(0.5)
    assert task.predict(logits).min().item() == 0.0


def test_normals_l1_on_normalised_prediction_summed_over_xyz():
    task = build_task("normals", {})
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, :, 0, 0] = torch.tensor([3.0, 0.0, 4.0])  # → (0.6, 0, 0.8)
    logits[0, :, 0, 1] = torch.tensor([1.0, 1.0, 1.0])
    target = torch.zeros(1, 3, 1, 2)
    target[0, :, 0, 0] = torch.tensor([0.0, 0.0, 1.0])  # second pixel: zero vector = invalid
    assert task.loss(logits, target).item() == pytest.approx(0.6 + 0.0 + 0.2)
    assert torch.allclose(task.predict(logits).norm(dim=1), torch.ones(1, 1, 2))


def test_edge_balanced_bce_matches_the_seeds_formula():
    task = build_task("edge", {"pos_weight": 0.95})
    x = torch.tensor([[[[0.3, -1.2, 2.0]]]])
    y = torch.tensor([[[[1.0, 0.0, 255.0]]]])
    # w·(−log σ(x)) for the positive, (1−w)·(−log(1−σ(x))) for the negative, mean over 2 valid pixels
    expected = (
        0.95 * -math.log(torch.sigmoid(torch.tensor(0.3)).item()) + 0.05 * -math.log(1 - torch.sigmoid(torch.tensor(-1.2)).item())
    ) / 2
    assert task.loss(x, y).item() == pytest.approx(expected, rel=1e-6)
    # the seeds' form: BCE-with-logits with pos_weight w/(1−w), divided by 1/(1−w)
    valid = y != 255
    seeds = torch.nn.functional.binary_cross_entropy_with_logits(x[valid], y[valid], pos_weight=torch.tensor(0.95 / 0.05)) * 0.05
    assert task.loss(x, y).item() == pytest.approx(seeds.item(), rel=1e-6)


def test_saliency_weight_is_the_batch_share_of_negatives():
    task = build_task("saliency", {})
    x = torch.tensor([[[[0.5, -0.5, 1.0, 0.0]]]])
    y = torch.tensor([[[[1.0, 0.0, 0.0, 0.0]]]])
    w = 0.75  # three of four valid pixels are negative
    logp = torch.nn.functional.logsigmoid
    expected = -(w * logp(torch.tensor(0.5)) + (1 - w) * (logp(torch.tensor(0.5)) + logp(torch.tensor(-1.0)) + logp(torch.tensor(0.0)))) / 4
    assert task.loss(x, y).item() == pytest.approx(expected.item(), rel=1e-6)
    # equal to the seeds' two-class cross-entropy with class weights [1−w, w], summed / valid pixels
    two = torch.cat([torch.zeros_like(x), x], dim=1)
    ce = torch.nn.functional.cross_entropy(two, y[:, 0].long(), weight=torch.tensor([1 - w, w]), reduction="sum") / 4
    assert task.loss(x, y).item() == pytest.approx(ce.item(), rel=1e-6)


def test_pos_weight_must_be_a_probability():
    with pytest.raises(ConfigError, match="tasks.edge.pos_weight"):
        build_task("edge", {"pos_weight": 19})
    with pytest.raises(ConfigError, match="tasks.saliency.pos_weight"):
        build_task("saliency", {"pos_weight": "high"})
    with pytest.raises(ConfigError, match="Did you mean 'weight'"):
        build_task("depth", {"wieght": 1})


def test_normals_flip_negates_x_and_keeps_invalid_zero():
    task = build_task("normals", {})
    target = torch.zeros(3, 1, 2)
    target[:, 0, 0] = torch.tensor([0.6, 0.0, 0.8])
    flipped = task.flip_horizontal(target)
    assert torch.equal(flipped[:, 0, 1], torch.tensor([-0.6, 0.0, 0.8]))
    assert not task.valid_mask(flipped[None])[0, 0, 0]
    batch = torch.stack([target, target * 0.5])  # batched: only the x channel of each sample changes sign
    flipped_batch = task.flip_horizontal(batch)
    assert torch.equal(flipped_batch[1, :, 0, 1], torch.tensor([-0.3, 0.0, 0.4]))


@pytest.mark.parametrize("name", MAP_TASKS)
def test_colorize_gives_uint8_rgb(name):
    task = build_task(name, {}, CLASSES)
    logits = torch.randn(1, task.out_channels, 5, 7)
    picture = task.colorize(task.predict(logits)[0])
    assert picture.shape == (5, 7, 3) and picture.dtype.name == "uint8"


def test_output_priors_predict_the_trivial_baselines():
    seg = build_task("semseg", {}, CLASSES)
    target = torch.tensor([[[0, 1, 1, 255]]])
    prior = seg.output_prior([target])
    assert torch.equal(seg.constant_prediction(prior, target), torch.ones_like(target))  # majority class
    assert torch.allclose(prior.exp(), torch.tensor([2 / 6, 3 / 6, 1 / 6]))  # add-one smoothed frequencies

    depth = build_task("depth", {})
    d = torch.tensor([[[[1.0, 3.0, 0.0]]]])
    assert depth.constant_prediction(depth.output_prior([d, d * 2]), d).unique().tolist() == [3.0]

    normals = build_task("normals", {})
    n = torch.zeros(1, 3, 1, 2)
    n[0, 2, 0, 0], n[0, 0, 0, 1] = 1.0, 1.0
    mean = normals.constant_prediction(normals.output_prior([n]), n)[0, :, 0, 0]
    assert torch.allclose(mean, torch.tensor([2**-0.5, 0.0, 2**-0.5]))

    edge = build_task("edge", {})
    e = torch.tensor([[[[1.0, 0.0, 0.0, 0.0, 255.0]]]])
    assert edge.constant_prediction(edge.output_prior([e]), e)[0, 0, 0, 0].item() == pytest.approx(0.25)


@pytest.mark.parametrize(
    "name, options, variant",
    [
        ("semseg", {"miou": "per_image"}, "per-image"),
        ("semseg", {}, "accumulated"),
        ("depth", {"pooling": "image", "max_depth": 80}, "per-image mean, depth < 80 m"),
        ("depth", {}, "pixel-pooled"),
        ("saliency", {"protocol": "mtinet"}, "MTI-Net"),
        ("saliency", {}, "dataset-pooled, beta2=0.3"),
        ("edge", {"thresholds": "mtinet", "nms": False, "max_dist": 0.0075}, "MTI-Net 99 thresholds"),
        ("edge", {}, "SEISM HED 101 thresholds, >, NMS, maxDist 0.011"),
    ],
)
def test_metric_variants_are_task_options_and_named_in_reports(name, options, variant):
    assert variant in build_task(name, options, CLASSES).metric().variant


def test_unknown_variant_names_the_option():
    with pytest.raises(ConfigError, match="tasks.depth.pooling"):
        build_task("depth", {"pooling": "median"})


def test_edge_image_ids_file_selects_seism_subsets(tmp_path):
    with pytest.raises(ConfigError, match="tasks.edge.image_ids: id list not found"):
        build_task("edge", {"image_ids": str(tmp_path / "test_new.txt")})
    (tmp_path / "test_new.txt").write_text("2008_000002\n2008_000003\n\n")
    metric = build_task("edge", {"image_ids": str(tmp_path / "test_new.txt")}).metric()
    assert metric.image_ids == {"2008_000002", "2008_000003"} and "2 listed images" in metric.variant


def test_normals_cosine_loss_is_one_minus_the_mean_cosine():
    task = build_task("normals", {"loss": "cosine"})
    target = torch.zeros(1, 3, 2, 2)
    target[0, 2] = 1.0
    target[0, :, 1, 1] = 0.0  # invalid
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 2] = 2.0  # aligned after normalisation
    logits[0, 0, 0, 0], logits[0, 2, 0, 0] = 1.0, 0.0  # orthogonal at one pixel
    assert float(task.loss(logits, target)) == pytest.approx(1 - 2 / 3)
    with pytest.raises(ConfigError, match="cosine"):
        build_task("normals", {"loss": "dot"})
