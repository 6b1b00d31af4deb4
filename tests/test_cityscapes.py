"""Cityscapes 20-class variant (19 train ids + misc): mapping and dataset."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


pytestmark = pytest.mark.usefixtures("run_config_check")


# ---- Cityscapes 20-class variant (19 train ids + misc) --------------------------------------------------
def test_cityscapes_misc20_mapping_matches_official_table(shared_labels: Path) -> None:
    import csv

    from distilseg.data.tables import cityscapes_misc20_table

    names, palette, lut = cityscapes_misc20_table()
    assert len(names) == 20 and names[19] == "misc" and palette.shape == (20, 3)
    rows = list(csv.DictReader(open(shared_labels / "cityscapes.csv", newline="", encoding="utf-8")))
    official_names = {int(r["train_id"]): r["name"] for r in rows if 0 <= int(r["train_id"]) < 255}
    assert names[:19] == [official_names[t] for t in range(19)]
    misc = []
    for r in rows:
        label_id, train_id = int(r["id"]), int(r["train_id"])
        if label_id < 0:  # license plate, written as 255 in uint8 files
            assert lut[255] == 255
            continue
        want = train_id if 0 <= train_id < 255 else 255 if r["name"] in (
            "unlabeled", "ego vehicle", "rectification border", "out of roi") else 19
        assert lut[label_id] == want, r["name"]
        if want == 19:
            misc.append(r["name"])
            assert r["ignore_in_eval"] == "True"
    assert sorted(misc) == sorted(["static", "dynamic", "ground", "parking", "rail track", "guard rail", "bridge",
                                   "tunnel", "polegroup", "caravan", "trailer"])


def test_cityscapes_misc20_dataset(tmp_path: Path) -> None:
    from PIL import Image

    from distilseg.data import create_dataset
    from distilseg.errors import DataError, UsageError

    city = tmp_path / "leftImg8bit" / "val" / "aachen"
    gt = tmp_path / "gtFine" / "val" / "aachen"
    city.mkdir(parents=True)
    gt.mkdir(parents=True)
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(city / "a_000000_000019_leftImg8bit.png")
    ids = np.array([[7, 9, 0, 1], [26, 30, 255, 33]], np.uint8)  # road parking unlabeled ego / car trailer plate bike
    Image.fromarray(ids).save(gt / "a_000000_000019_gtFine_labelIds.png")
    ds = create_dataset("cityscapes", root=tmp_path, split="val", label_type="misc20")
    assert ds.num_classes == 20 and ds.classes[-1] == "misc"
    assert ds.load_mask(0).tolist() == [[0, 19, 255, 255], [13, 19, 255, 18]]
    assert create_dataset("cityscapes", root=tmp_path, split="val").load_mask(0).tolist() == [
        [0, 255, 255, 255], [13, 255, 255, 18]]
    with pytest.raises(UsageError, match="misc20"):
        create_dataset("cityscapes", root=tmp_path, split="val", label_type="misc")
    (gt / "a_000000_000019_gtFine_labelIds.png").rename(gt / "a_000000_000019_gtFine_labelTrainIds.png")
    with pytest.raises(DataError, match="labelIds"):
        create_dataset("cityscapes", root=tmp_path, split="val", label_type="misc20")
