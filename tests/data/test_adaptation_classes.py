"""The class sets of DenseMTL's adaptation pairs: SYNTHIA → Cityscapes (16) and Virtual KITTI 2 → Cityscapes (8)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from scenemtl.config import validate
from scenemtl.data.cityscapes import Cityscapes8
from scenemtl.data.vkitti2 import VirtualKitti2, VirtualKitti2Eight
from scenemtl.engine.builder import eval_info
from scenemtl.errors import ConfigError
from tests.data.test_cityscapes import write_cityscapes
from tests.data.test_vkitti2 import write_vkitti2

# DenseMTL's cls08 (dataset/semseg/mappings.py), written out: Cityscapes label id → class, VKITTI2 class id → class
CITYSCAPES_8 = {7: 0, 11: 1, 17: 2, 19: 3, 20: 4, 21: 5, 23: 6, 26: 7, 28: 7}
VKITTI2_8 = {5: 0, 4: 1, 9: 2, 8: 3, 7: 4, 2: 5, 3: 5, 1: 6, 11: 7, 12: 7, 13: 7}


def test_vkitti2_and_cityscapes_eight_classes_map_every_id(tmp_path):
    vk = write_vkitti2(tmp_path / "vk")
    full, eight = VirtualKitti2(str(vk), "train", ["semseg"]), VirtualKitti2Eight(str(vk), "train", ["semseg"])
    for index in range(len(full)):
        ids = full.sample(index)["semseg"].numpy()
        expected = np.vectorize(lambda i: VKITTI2_8.get(int(i), 255))(ids)
        assert np.array_equal(eight.sample(index)["semseg"].numpy(), expected)
    cs = write_cityscapes(tmp_path / "cs")
    dataset = Cityscapes8(str(cs), "val", ["semseg"])
    city, stem = dataset.items[0]
    raw = np.array(Image.open(cs / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png"))
    expected = np.vectorize(lambda i: CITYSCAPES_8.get(int(i), 255))(raw)
    assert np.array_equal(dataset.sample(0)["semseg"].numpy(), expected)
    assert (raw == 27).any() and (dataset.sample(0)["semseg"].numpy()[raw == 27] == 255).all()  # truck: ignored
    assert eight.info.class_names == dataset.info.class_names
    assert eight.info.mean == dataset.info.mean == (0.45, 0.45, 0.45)


@pytest.mark.parametrize("source, target", [("synthia", "cityscapes_16"), ("vkitti2_8", "cityscapes_8")])
def test_adaptation_pairs_share_their_classes(source, target):
    config = validate({"tasks": {"semseg": {}}, "data": {"name": source, "eval_dataset": {"name": target}}}, "(test)")
    assert eval_info(config).name == target


def test_a_pair_with_other_classes_is_refused():
    config = validate({"tasks": {"semseg": {}}, "data": {"name": "vkitti2", "eval_dataset": {"name": "cityscapes_8"}}}, "(test)")
    with pytest.raises(ConfigError, match="data.eval_dataset: 'cityscapes_8' names the classes of 'semseg'"):
        eval_info(config)


def test_the_all_split_is_every_frame_and_data_check_skips_it(tmp_path):
    from scenemtl.data.synthia import Synthia
    from tests.data.test_synthia import write_synthia

    root = write_synthia(tmp_path / "synthia")
    ids = {
        split: {Synthia(str(root), split, ["semseg"]).sample_id(i) for i in range(len(Synthia(str(root), split, ["semseg"])))}
        for split in ("train", "val", "all")
    }
    assert ids["all"] == ids["train"] | ids["val"] and not ids["train"] & ids["val"]
    assert Synthia.union_splits == ("all",)
