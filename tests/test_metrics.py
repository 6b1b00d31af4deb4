"""SegMetrics: hand-computed confusion matrices, torchmetrics agreement, accumulation and state merging."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from distilseg.errors import DataError, UsageError
from distilseg.metrics import (
    SegMetrics,
    confusion_matrix,
    format_table,
    metrics_from_confusion,
    to_markdown,
    write_metrics_json,
)

# 5 classes: 0 and 1 common, 2 in the ground truth but only "predicted" at the ignored pixel,
# 3 predicted but absent from the ground truth, 4 absent from both.
TARGET = torch.tensor([[[0, 0, 1, 1], [2, 255, 0, 1]]])
PREDS = torch.tensor([[[0, 1, 1, 1], [0, 2, 1, 3]]])
# (gt, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,0) [ignored] (0,1) (1,3)
HAND_CM = [
    [1, 2, 0, 0, 0],
    [0, 2, 0, 1, 0],
    [1, 0, 0, 0, 0],
    [0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0],
]
NAMES = ["road", "car", "sign", "tree", "sky"]


def test_confusion_matrix_by_hand_excludes_ignore() -> None:
    cm = confusion_matrix(PREDS, TARGET, 5)
    assert cm.dtype == torch.int64
    assert cm.tolist() == HAND_CM


def test_metrics_by_hand() -> None:
    m = metrics_from_confusion(np.array(HAND_CM), NAMES)
    # class 0: tp=1 fp=1 fn=2 tn=3; class 1: tp=2 fp=2 fn=1 tn=2; class 2: tp=0 fp=0 fn=1 tn=6;
    # class 3: tp=0 fp=1 fn=0 tn=6; class 4: nothing. 7 valid pixels.
    expected = [
        # accuracy = MMSegmentation's per-class Acc = TP / (TP + FN) (= recall), not (TP + TN) / N
        ("road", 1 / 4, 2 / 5, 1 / 2, 1 / 3, 1 / 3, 3),
        ("car", 2 / 5, 4 / 7, 1 / 2, 2 / 3, 2 / 3, 3),
        ("sign", 0.0, 0.0, 0.0, 0.0, 0.0, 1),
        ("tree", 0.0, 0.0, 0.0, None, None, 0),
        ("sky", None, None, None, None, None, 0),
    ]
    for row, (name, iou, dice, prec, rec, acc, sup) in zip(m["per_class"], expected):
        assert row["name"] == name
        for key, want in zip(("iou", "dice", "precision", "recall", "accuracy"), (iou, dice, prec, rec, acc)):
            if want is None:
                assert row[key] is None, (name, key)
            else:
                assert row[key] == pytest.approx(want, abs=1e-12), (name, key)
        assert row["support"] == sup
    assert m["mIoU"] == pytest.approx((1 / 4 + 2 / 5) / 4)  # 13/80, sky left out, tree counts as 0
    assert m["mDice"] == pytest.approx((2 / 5 + 4 / 7) / 4)  # 17/70
    assert m["mPrecision"] == pytest.approx(1 / 4)
    assert m["mRecall"] == pytest.approx(1 / 3)  # (1/3 + 2/3 + 0) / 3
    assert m["mean_class_accuracy"] == pytest.approx(1 / 3)
    assert m["pixel_accuracy"] == pytest.approx(3 / 7)
    assert m["fwIoU"] == pytest.approx(3 / 7 * 1 / 4 + 3 / 7 * 2 / 5)  # 39/140
    assert list(m) == [
        "mIoU", "mDice", "mPrecision", "mRecall", "pixel_accuracy", "mean_class_accuracy", "fwIoU", "per_class",
    ]


def test_segmetrics_class_map_and_logits_agree() -> None:
    metric = SegMetrics(5, class_names=NAMES)
    metric.update(PREDS, TARGET)
    by_map = metric.compute()
    assert metric.confmat.tolist() == HAND_CM

    logits = torch.nn.functional.one_hot(PREDS, 5).permute(0, 3, 1, 2).float() * 3.0 + 0.1 * torch.rand(1, 5, 2, 4)
    metric2 = SegMetrics(5, class_names=NAMES)
    metric2.update(logits, TARGET)
    assert metric2.confmat.tolist() == HAND_CM
    assert metric2.compute() == by_map


def test_shape_and_value_errors() -> None:
    metric = SegMetrics(3)
    with pytest.raises(ValueError, match="differ in shape"):
        metric.update(torch.zeros(1, 3, 8, 8), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="channels"):
        metric.update(torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(DataError, match=r"\[7\]"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 7], [255, 1]]]))
    with pytest.raises(UsageError):
        SegMetrics(3, class_names=["a", "b"])


def test_against_torchmetrics_jaccard() -> None:
    g = torch.Generator().manual_seed(0)
    k = 6
    target = torch.randint(0, k, (3, 16, 16), generator=g)
    target[:, :3] = 255
    target[target == 5] = 4  # class 5 never in the ground truth...
    preds = torch.randint(0, k - 1, (3, 16, 16), generator=g)  # ...nor predicted: absent from both
    preds[0, 5, 5] = 3
    ours = SegMetrics(k)
    ours.update(preds, target)
    res = ours.compute()
    per_class_tm = MulticlassJaccardIndex(num_classes=k, average=None, ignore_index=255)(preds, target)
    for c in range(k - 1):  # torchmetrics defines these the same way
        assert res["per_class"][c]["iou"] == pytest.approx(per_class_tm[c].item(), abs=1e-6)
    assert res["per_class"][5]["iou"] is None  # torchmetrics reports 0 (zero_division) for the absent class
    assert per_class_tm[5].item() == 0.0
    # torchmetrics' macro average also leaves out classes absent from both, so the means agree
    macro_tm = MulticlassJaccardIndex(num_classes=k, average="macro", ignore_index=255)(preds, target)
    assert res["mIoU"] == pytest.approx(macro_tm.item(), abs=1e-6)


def test_multi_update_equals_single_update() -> None:
    g = torch.Generator().manual_seed(1)
    preds = torch.randint(0, 4, (6, 8, 8), generator=g)
    target = torch.randint(0, 4, (6, 8, 8), generator=g)
    target[target == 3] = 255
    once = SegMetrics(4)
    once.update(preds, target)
    many = SegMetrics(4)
    for i in range(0, 6, 2):
        many.update(preds[i : i + 2], target[i : i + 2])
    assert torch.equal(once.confmat, many.confmat)
    assert once.compute() == many.compute()


def test_merge_state_sums_like_ddp() -> None:
    g = torch.Generator().manual_seed(2)
    preds = torch.randint(0, 4, (4, 8, 8), generator=g)
    target = torch.randint(0, 4, (4, 8, 8), generator=g)
    whole = SegMetrics(4)
    whole.update(preds, target)
    a, b = SegMetrics(4), SegMetrics(4)
    a.update(preds[:2], target[:2])
    b.update(preds[2:], target[2:])
    assert not torch.equal(a.confmat, whole.confmat)
    a.merge_state(b)
    assert torch.equal(a.confmat, whole.confmat)
    assert a.compute() == whole.compute()
    assert whole._reductions["confmat"] is not None  # a "sum" reduction is registered for DDP sync


def test_no_valid_pixels_gives_nulls() -> None:
    metric = SegMetrics(2)
    metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 255))
    res = metric.compute()
    assert res["mIoU"] is None and res["pixel_accuracy"] is None and res["fwIoU"] is None
    assert [r["support"] for r in res["per_class"]] == [0, 0]


def test_write_json_table_and_markdown(tmp_path) -> None:
    m = metrics_from_confusion(np.array(HAND_CM), NAMES)
    path = write_metrics_json(tmp_path / "metrics.json", m, "camvid", "val", 1)
    doc = json.loads(path.read_text())
    assert list(doc)[:4] == ["dataset", "split", "num_images", "mIoU"]
    assert doc["dataset"] == "camvid" and doc["split"] == "val" and doc["num_images"] == 1
    assert doc["per_class"][4] == {
        "name": "sky", "iou": None, "dice": None, "precision": None, "recall": None, "accuracy": None, "support": 0,
    }
    assert list(doc["per_class"][0]) == ["name", "iou", "dice", "precision", "recall", "accuracy", "support"]
    assert doc["mIoU"] == pytest.approx(13 / 80)

    table = format_table(m)
    assert "road" in table and "25.00" in table and "16.25" in table  # road IoU, mIoU
    sky_line = [line for line in table.splitlines() if line.startswith("sky")][0]
    assert sky_line.split()[1:] == ["-", "-", "-", "-", "-", "0"]

    md = to_markdown(doc)
    assert "| road | 25.00 | 40.00 | 50.00 | 33.33 | 33.33 | 3 |" in md
    assert "| sky | - | - | - | - | - | 0 |" in md
    assert "- dataset: camvid" in md


def test_real_camvid_masks_against_torchmetrics(camvid_root) -> None:
    """Two real CamVid val masks; 'prediction' = the mask shifted 3 px right (edge errors like a model's)."""
    from distilseg.data import create_dataset

    ds = create_dataset("camvid", root=camvid_root, split="val")
    masks = torch.stack([torch.from_numpy(ds.load_mask(i).astype(np.int64)) for i in (0, 50)])
    preds = torch.roll(masks, shifts=3, dims=2).clamp(max=ds.num_classes - 1)  # ignore -> last class
    metric = SegMetrics(ds.num_classes, class_names=ds.classes)
    metric.update(preds, masks)
    res = metric.compute()
    valid = masks != 255
    assert sum(r["support"] for r in res["per_class"]) == int(valid.sum())
    assert res["pixel_accuracy"] == pytest.approx(float((preds == masks)[valid].double().mean()), abs=1e-9)
    tm = MulticlassJaccardIndex(num_classes=ds.num_classes, average=None, ignore_index=255)(preds, masks)
    for c, row in enumerate(res["per_class"]):
        if row["iou"] is not None:
            assert row["iou"] == pytest.approx(tm[c].item(), abs=1e-6)
    assert 0.5 < res["mIoU"] < 1.0
    perfect = SegMetrics(ds.num_classes)
    perfect.update(masks, masks)
    assert perfect.compute()["mIoU"] == 1.0
