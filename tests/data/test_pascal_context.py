"""PASCAL-Context (PASCAL-MT): decoding of every task, the parts index outside the dataset, `data check`,
augmentation alignment, and the ATRC/InvPT recipe training from configs/pascal_context/hps.yaml."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from scenemtl.config import load_config
from scenemtl.data import pascal_context as pc
from scenemtl.data.check import check_dataset
from scenemtl.data.pascal_context import CONTEXT_RELEASE, MT_RELEASE, NORMALS_CLASSES, PART_CLASSES, PascalContext, label_edges
from scenemtl.engine.builder import build_tasks, build_transform, dataset_info
from scenemtl.engine.trainer import Trainer
from scenemtl.errors import ConfigError, DataError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "pascal_context"
TASKS = ["semseg", "human_parts", "saliency", "normals", "edge"]
VALID = sorted(NORMALS_CLASSES)  # PASCAL-Context ids whose normals are kept
INVALID = [c for c in range(1, 460) if c not in NORMALS_CLASSES]  # e.g. sky, grass, road
PART_DT = [("part_name", "O"), ("mask", "O")]
OBJ_DT = [("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]


def context_of(semseg: np.ndarray) -> np.ndarray:
    """An injective VOC → Context id map: even VOC ids get a normals-valid class, odd ones an invalid class."""
    return np.where(semseg % 2 == 0, np.take(VALID, semseg), np.take(INVALID, semseg)).astype(np.uint16)


def write_parts(path: Path, objects: list[tuple[str, int, np.ndarray, list[tuple[str, np.ndarray]]]]) -> None:
    """A PASCAL-Part ``anno`` struct: objects (class, class_ind, mask, parts (part_name, mask)), as MATLAB saves it."""
    objs = np.zeros((1, len(objects)), dtype=OBJ_DT)
    for k, (name, class_ind, mask, parts) in enumerate(objects):
        part_array = np.zeros((0, 0))  # MATLAB's [] for an object without parts
        if parts:
            part_array = np.zeros((1, len(parts)), dtype=PART_DT)
            for j, (part_name, part_mask) in enumerate(parts):
                part_array[0, j] = (part_name, part_mask.astype(np.uint8))
        objs[0, k] = (name, np.array([[class_ind]], np.uint8), mask.astype(np.uint8), part_array)
    savemat(path, {"anno": {"imname": path.stem, "objects": objs}})


def blocky(rng: np.random.Generator, h: int, w: int, person: bool) -> np.ndarray:
    """VOC ids 0..20 in 4×4 blocks; with ``person``, ids 15 (head pixels) and 16 (torso pixels) appear."""
    blocks = rng.integers(0, 21, (4, 4))
    if person:
        blocks[0, 0], blocks[3, 3] = 15, 16
    else:
        blocks[np.isin(blocks, (15, 16))] = 3
    return np.kron(blocks, np.ones((-(-h // 4), -(-w // 4)), dtype=np.int64))[:h, :w]


SPLITS = {"train": ["2008_000001", "2008_000002", "2008_000003", "2008_000004"], "val": ["2008_000010", "2008_000011"]}
SIZES = [(24, 32), (28, 30), (26, 32), (24, 28)]


def write_pascal(root: Path, splits=SPLITS, sizes=SIZES, no_person=("2008_000002",)) -> Path:
    """The release: ImageSets/Context lists, JPEGImages, semseg (VOC12 or pascal-context), human_parts .mat,
    normals_distill / sal_distill PNGs, pascal-context/trainval .mat LabelMaps.

    Every target is a function of the VOC label s: LabelMap = context_of(s); normals' x = +0.6 where s % 4 == 0
    and −0.6 where s % 4 == 2; saliency = s ≥ 10; the person's head mask is s == 15 and torso mask s == 16.
    """
    rng = np.random.default_rng(3)
    for folder in (
        "ImageSets/Context",
        "JPEGImages",
        "semseg/VOC12",
        "semseg/pascal-context",
        "human_parts",
        "normals_distill",
        "sal_distill",
        "pascal-context/trainval",
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        (root / "ImageSets" / "Context" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for n, image_id in enumerate(ids):
            h, w = sizes[n % len(sizes)]
            s = blocky(rng, h, w, person=image_id not in no_person)
            image = np.stack([s * 12, rng.integers(0, 256, (h, w)), rng.integers(0, 256, (h, w))], -1)
            Image.fromarray(image.astype(np.uint8)).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
            if n % 2 == 0:  # VOC12 labels are palette PNGs, as VOC's SegmentationClass
                png = Image.fromarray(s.astype(np.uint8), mode="P")
                png.putpalette(pc.label_palette(256).flatten().tolist())
                png.save(root / "semseg" / "VOC12" / f"{image_id}.png")
            if n % 2 == 1 or n == 2:  # n == 2: in both folders, and the VOC12 one must win
                other = s if n % 2 == 1 else np.zeros_like(s)
                context_png = root / "semseg" / "pascal-context" / f"{image_id}.png"
                Image.fromarray(other.astype(np.uint8), mode="L").save(context_png)
            dog = ("dog", 12, s == 12, [])
            if image_id in no_person:
                write_parts(root / "human_parts" / f"{image_id}.mat", [dog])
            else:
                write_parts(
                    root / "human_parts" / f"{image_id}.mat",
                    [dog, ("person", 15, np.isin(s, (15, 16)), [("head", s == 15), ("torso", s == 16)])],
                )
            nx = np.where(s % 4 == 0, 0.6, -0.6)
            normals = np.stack([nx, np.zeros_like(nx), np.full_like(nx, 0.8)], -1)
            Image.fromarray(np.rint((normals + 1) * 255 / 2).astype(np.uint8)).save(root / "normals_distill" / f"{image_id}.png")
            sal = np.where(s >= 10, rng.integers(129, 256, (h, w)), rng.integers(0, 128, (h, w)))
            Image.fromarray(sal.astype(np.uint8), mode="L").save(root / "sal_distill" / f"{image_id}.png")
            savemat(root / "pascal-context" / "trainval" / f"{image_id}.mat", {"LabelMap": context_of(s)})
    return root


def listing(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_every_task_decodes_as_the_seeds_read_it(tmp_path):
    root = write_pascal(tmp_path / "PASCAL_MT")
    train = PascalContext(str(root), "train", TASKS, cache_dir=str(tmp_path / "cache"))
    assert len(train) == 4 and len(PascalContext(str(root), "val", ["semseg"])) == 2
    assert train.variant == MT_RELEASE
    for index, image_id in enumerate(SPLITS["train"]):
        sample = train.sample(index)
        h, w = SIZES[index]
        assert sample["meta"] == {"id": image_id, "size": (h, w), "labelled": TASKS}
        jpeg = np.array(Image.open(root / "JPEGImages" / f"{image_id}.jpg").convert("RGB"))
        assert sample["image"].dtype == torch.uint8
        assert torch.equal(sample["image"], torch.from_numpy(jpeg).permute(2, 0, 1))
        labels = sample["semseg"]
        assert labels.dtype == torch.int64 and labels.shape == (h, w) and int(labels.max()) <= 20
        # index 2 has an all-zero pascal-context PNG beside its VOC12 one: VOC12 is read
        assert len(labels.unique()) > 2
        s = labels.numpy()
        context = context_of(s)
        # normals: 2x/255 − 1 on NYU-compatible Context classes (even VOC ids here), zero elsewhere
        stored = np.array(Image.open(root / "normals_distill" / f"{image_id}.png")).astype(np.float32)
        expected = np.where((s % 2 == 0)[..., None], 2 * stored / 255 - 1, 0).transpose(2, 0, 1)
        assert sample["normals"].dtype == torch.float32 and np.allclose(sample["normals"].numpy(), expected, atol=1e-6)
        assert bool((sample["normals"][:, torch.from_numpy(s % 2 == 1)] == 0).all())
        assert torch.equal(sample["saliency"], torch.from_numpy((s >= 10).astype(np.float32))[None])
        assert torch.equal(sample["edge"][0], torch.from_numpy(label_edges(context).astype(np.float32)))
        assert bool((sample["edge"] == 1).any())
        parts = sample["human_parts"]
        if image_id == "2008_000002":  # no person: the whole map is ignored
            assert bool((parts == 255).all())
        else:
            assert torch.equal(parts, torch.from_numpy(np.select([s == 15, s == 16], [1, 2], 0)))


def test_human_parts_follow_the_part_table_and_ignore_rules(tmp_path):
    root = write_pascal(tmp_path / "PASCAL_MT")
    path = root / "human_parts" / "2008_000001.mat"
    h, w = SIZES[0]
    band = lambda r0, r1: np.pad(np.ones((r1 - r0, w), bool), ((r0, h - r1), (0, 0)))  # noqa: E731
    everything = np.ones((h, w), bool)
    names = sorted(PART_CLASSES)  # 24 PASCAL-Part person parts, one row band each (24 rows)
    person_parts = [(name, band(k, k + 1)) for k, name in enumerate(names)]
    write_parts(
        path, [("person", 15, everything, person_parts[:12]), ("person", 15, everything, person_parts[12:]), ("person", 15, everything, [])]
    )
    dataset = PascalContext(str(root), "train", ["human_parts"], people_only=False)
    parts = dataset.sample(0)["human_parts"]
    assert [int(parts[k, 0]) for k in range(24)] == [PART_CLASSES[name] for name in names]
    # the seeds' HUMAN_PART[6] table, transcribed independently of the module
    head = ["hair", "head", "lear", "lebrow", "leye", "mouth", "nose", "rear", "rebrow", "reye"]
    assert PART_CLASSES == {
        **dict.fromkeys(head, 1),
        "neck": 2,
        "torso": 2,
        "luarm": 3,
        "ruarm": 3,
        **dict.fromkeys(["lhand", "llarm", "rhand", "rlarm"], 4),
        "luleg": 5,
        "ruleg": 5,
        **dict.fromkeys(["lfoot", "llleg", "rfoot", "rlleg"], 6),
    }
    assert len(NORMALS_CLASSES) == 170 and NORMALS_CLASSES[427] == "tvmonitor" and 431 not in NORMALS_CLASSES
    # a later part overwrites an earlier one; pixels of the person outside its parts are background
    write_parts(path, [("person", 15, everything, [("torso", band(0, 10)), ("lhand", band(5, 8))])])
    parts = dataset.sample(0)["human_parts"]
    assert int(parts[0, 0]) == 2 and int(parts[6, 0]) == 4 and int(parts[15, 0]) == 0
    # people without parts, or whose parts are empty: all ignored
    write_parts(path, [("person", 15, everything, [])])
    assert bool((dataset.sample(0)["human_parts"] == 255).all())
    write_parts(path, [("person", 15, everything, [("head", np.zeros((h, w), bool))])])
    assert bool((dataset.sample(0)["human_parts"] == 255).all())
    write_parts(path, [("person", 15, everything, [("tail", band(0, 2))])])
    with pytest.raises(DataError, match=r"2008_000001.mat: unknown person part 'tail'"):
        dataset.sample(0)


def test_label_edges_equal_opencv_laplacian_and_skimage_thin():
    cv2 = pytest.importorskip("cv2")
    thin = pytest.importorskip("skimage.morphology").thin
    rng = np.random.default_rng(0)
    for trial in range(30):
        h, w = rng.integers(3, 40, 2)
        labels = rng.integers(0, rng.integers(2, 6), (h, w)).astype(np.uint16) * 97
        if trial % 3 == 0:  # blocky maps, like real label maps
            labels = np.kron(rng.integers(0, 4, (4, 4)), np.ones((10, 10), np.int64))[:h, :w].astype(np.uint16)
        response = np.abs(cv2.Laplacian(labels, cv2.CV_64F)) > 0
        ours = np.abs(pc.ndimage.correlate(labels.astype(np.float64), pc._LAPLACIAN, mode="mirror")) > 0
        assert np.array_equal(ours, response), (h, w)
        assert np.array_equal(label_edges(labels), thin(response))


def test_both_release_folders_and_the_folder_holding_them(tmp_path):
    write_pascal(tmp_path / "a" / "PASCALContext")
    dataset = PascalContext(str(tmp_path / "a"), "val", ["edge"])  # data.root may hold the extracted folder
    assert dataset.variant == CONTEXT_RELEASE and dataset.folder == tmp_path / "a" / "PASCALContext"
    write_pascal(tmp_path / "b" / "PASCAL_MT")
    assert PascalContext(str(tmp_path / "b"), "val", ["edge"]).variant == MT_RELEASE
    with pytest.raises(ConfigError, match="data.root is not set"):
        PascalContext(None, "train", ["semseg"])
    with pytest.raises(DataError, match=r"no PASCAL-Context release in .*PASCAL_MT"):
        PascalContext(str(tmp_path), "train", ["semseg"])
    with pytest.raises(DataError, match=r"missing split file .*ImageSets/Context/val.txt"):
        (tmp_path / "a" / "PASCALContext" / "ImageSets" / "Context" / "val.txt").unlink()
        PascalContext(str(tmp_path / "a"), "val", ["semseg"])
    (tmp_path / "b" / "PASCAL_MT" / "sal_distill").rename(tmp_path / "b" / "elsewhere")
    with pytest.raises(DataError, match=r"no folder .*sal_distill \(the saliency labels\)"):
        PascalContext(str(tmp_path / "b"), "train", ["saliency"])


def test_parts_index_is_cached_outside_the_read_only_dataset(tmp_path, monkeypatch):
    root = write_pascal(tmp_path / "PASCAL_MT")
    before = listing(root)
    os.chmod(root, 0o555)
    cache = tmp_path / "cache"
    monkeypatch.setenv("SCENEMTL_CACHE", str(cache))
    calls = []
    real = pc.read_mat
    monkeypatch.setattr(pc, "read_mat", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    try:
        parts_only = PascalContext(str(root), "train", ["human_parts"])  # as the seeds: images with people only
        assert parts_only.people_only and [parts_only.sample_id(i) for i in range(len(parts_only))] == [
            "2008_000001",
            "2008_000003",
            "2008_000004",
        ]
        assert len(calls) == 4  # one read of each human_parts .mat to build the index
        index_file = parts_only.index_file
        assert index_file.is_file() and cache in index_file.parents
        data = json.loads(index_file.read_text())
        assert data["root"] == str(root.resolve()) and data["objects"]["2008_000002"] == [12]
        assert data["objects"]["2008_000001"] == [12, 15]
        calls.clear()
        assert len(PascalContext(str(root), "train", ["human_parts"])) == 3 and calls == []  # read from the cache
        assert len(PascalContext(str(root), "train", TASKS)) == 4 and calls == []  # all images with other tasks
        assert len(PascalContext(str(root), "train", ["human_parts"], people_only=False)) == 4
        assert listing(root) == before  # the dataset folder is left as it was
    finally:
        os.chmod(root, 0o755)
    # a copy that ships the seeds' index (ImageSets/Parts/<split>.txt) is read from there
    (root / "ImageSets" / "Parts").mkdir()
    (root / "ImageSets" / "Parts" / "val.txt").write_text(json.dumps({"2008_000010": [15], "2008_000011": [-1, 3]}))
    calls.clear()
    val = PascalContext(str(root), "val", ["human_parts"], cache_dir=str(tmp_path / "other"))
    assert [val.sample_id(i) for i in range(len(val))] == ["2008_000010"] and calls == []
    assert not (tmp_path / "other").exists()
    # an unreadable .mat keeps its image (sample() then names the file) and nothing is cached
    mat = root / "human_parts" / "2008_000002.mat"
    mat.write_bytes(mat.read_bytes()[: mat.stat().st_size // 2])
    broken = PascalContext(str(root), "train", ["human_parts"], cache_dir=str(tmp_path / "third"))
    assert len(broken) == 4 and not broken.index_file.exists()
    with pytest.raises(DataError, match=r"human_parts/2008_000002.mat"):
        broken.sample(1)


def test_data_check_reports_ok_then_every_planted_defect(tmp_path):
    root = write_pascal(tmp_path / "PASCAL_MT")
    clean = check_dataset("pascal_context", str(root))
    assert clean.ok, clean.problems
    assert clean.samples == {"train": 4, "val": 2} and clean.variant == MT_RELEASE and not clean.warnings
    (root / "sal_distill" / "2008_000003.png").unlink()
    normals = root / "normals_distill" / "2008_000010.png"
    normals.write_bytes(normals.read_bytes()[: normals.stat().st_size // 2])
    Image.fromarray(np.zeros((10, 12), np.uint8), mode="L").save(root / "semseg" / "pascal-context" / "2008_000011.png")
    mat = root / "human_parts" / "2008_000004.mat"
    mat.write_bytes(mat.read_bytes()[: mat.stat().st_size // 2])
    with open(root / "ImageSets" / "Context" / "val.txt", "a") as split:
        split.write("2009_999999\n")
    report = check_dataset("pascal_context", str(root))
    text = "\n".join(report.problems)
    assert not report.ok and len(report.problems) == 5, text
    assert "missing file" in text and "sal_distill/2008_000003.png" in text
    assert "cannot read distilled normals PNG" in text and "normals_distill/2008_000010.png" in text
    assert "pascal-context/2008_000011.png: the semseg map is (10, 12) but its image 2008_000011.jpg is (28, 30)" in text
    assert "human_parts/2008_000004.mat" in text
    assert "JPEGImages/2009_999999.jpg" in text


def test_recipe_augmentation_keeps_every_target_aligned(tmp_path, monkeypatch):
    root = write_pascal(tmp_path / "PASCAL_MT", sizes=[(40, 48), (44, 40)], no_person=())
    monkeypatch.setenv("SCENEMTL_PASCAL_CONTEXT", str(root))
    config = load_config(CONFIGS / "hps.yaml", ["data.augment.crop=[32,40]", "data.augment.photometric=false"])
    assert config.data.augment.scale == (0.5, 2.0) and config.data.augment.flip
    info = dataset_info(config)
    tasks = build_tasks(config, info)
    transform = build_transform(config, tasks, info, train=True)
    dataset = PascalContext(str(root), "train", TASKS)
    flips = set()
    for seed in range(12):
        sample = transform(dataset.sample(seed % 4), np.random.default_rng(seed))
        semseg, parts, sal, normals, edge = (sample[k] for k in TASKS)
        assert semseg.shape == (32, 40) and normals.shape == (3, 32, 40) and sample["image"].shape == (3, 32, 40)
        known = semseg != 255  # the fixture has no ignored label: 255 is padding, the same in every target
        assert torch.equal(parts != 255, known) and torch.equal(sal[0] != 255, known)
        assert torch.equal(edge[0] != 255, known)
        assert torch.equal(parts[known], torch.where(semseg == 15, 1, torch.where(semseg == 16, 2, 0))[known])
        assert torch.equal(sal[0][known], (semseg[known] >= 10).float())
        valid = normals.norm(dim=0) > 0
        assert torch.equal(valid, known & (semseg % 2 == 0))
        sign = torch.sign(normals[0][valid]) * torch.where(semseg[valid] % 4 == 0, 1.0, -1.0)
        assert bool((sign == sign[0]).all())
        flips.add(float(sign[0]))
        # every edge pixel sits within 2 px of a label change (scales up to 2× move a 1-px offset to 2 px);
        # within 2 px of the crop's border the change may lie outside the crop
        padded = torch.nn.functional.pad(semseg[None, None].float(), (2, 2, 2, 2), mode="replicate")[0, 0]
        windows = padded.unfold(0, 5, 1).unfold(1, 5, 1)
        changes = windows.amax(dim=(-1, -2)) != windows.amin(dim=(-1, -2))
        interior = torch.zeros_like(changes)
        interior[2:-2, 2:-2] = True
        assert bool(changes[(edge[0] == 1) & interior].all())
    assert flips == {1.0, -1.0}


def test_atrc_recipe_trains_and_evaluates_on_the_release(tmp_path, monkeypatch):
    root = write_pascal(tmp_path / "PASCAL_MT")
    monkeypatch.setenv("SCENEMTL_PASCAL_CONTEXT", str(tmp_path))
    monkeypatch.setenv("SCENEMTL_CACHE", str(tmp_path / "cache"))
    cfg = load_config(
        CONFIGS / "hps.yaml",
        [
            f"out_dir={tmp_path / 'runs' / '{name}'}",
            "model.backbone.name=test_resnet",
            "model.backbone.weights=null",
            "model.options.head_channels=8",
            "data.augment.crop=[24,24]",
            "data.eval_pad=[32,32]",
            "data.batch_size=2",
            "data.eval_batch_size=2",
            "data.num_workers=0",
            "train.steps=2",
            "train.device=cpu",
            "train.eval_every=0",
            "train.checkpoint_every=0",
        ],
    )
    assert cfg.train.optimizer == "sgd" and cfg.train.lr == 0.005 and cfg.train.schedule == "poly"
    assert {name: t.weight for name, t in cfg.tasks.items()} == {
        "semseg": 1.0,
        "human_parts": 2.0,
        "saliency": 5.0,
        "normals": 10.0,
        "edge": 50.0,
    }
    assert cfg.tasks["edge"].options == {"pos_weight": 0.95, "max_dist": 0.0075} and not cfg.train.init_output_bias
    report = Trainer(cfg, progress=False, log=False).fit()
    metrics = report["metrics"]
    assert set(metrics) == set(TASKS)
    assert 0 <= metrics["semseg"]["miou"] <= 100 and 0 <= metrics["human_parts"]["miou"] <= 100  # percent
    assert "odsF" in metrics["edge"] and "mean" in metrics["normals"]
    assert not (root / "ImageSets" / "Parts").exists()
