"""Episodic data: deterministic scenes and task lists, preprocessing geometry, bad user input."""

import numpy as np
import pytest
import torch
from PIL import Image

from vlkit.data.episodes import (
    EpisodeDataset,
    EpisodicDataModule,
    build_episodes,
    collate_episodes,
    fold_classes,
    make_episode,
)
from vlkit.data.scenes import FashionScenePool, render_fashion_scenes
from vlkit.data.segmentation_preprocessing import preprocess_image, preprocess_label


def _toy_items():
    # 20 tiny "garments": a filled 14x14 square of intensity 200 in a 28x28 image, two per class
    images = np.zeros((20, 28, 28), dtype=np.uint8)
    images[:, 7:21, 7:21] = 200
    return images, np.arange(20) % 10


def test_scenes_are_deterministic_and_independent_of_pool_size():
    images, labels = _toy_items()
    a, la = render_fashion_scenes(images, labels, 5, canvas_size=64, seed=3)
    b, lb = render_fashion_scenes(images, labels, 8, canvas_size=64, seed=3)
    assert np.array_equal(a, b[:5]) and np.array_equal(la, lb[:5])
    c, _ = render_fashion_scenes(images, labels, 5, canvas_size=64, seed=4)
    assert not np.array_equal(a, c)


def test_scene_labels_follow_the_garment_pixels():
    images, labels = _toy_items()
    scenes, maps = render_fashion_scenes(images, labels, 10, canvas_size=64, seed=0, items_per_scene=(1, 1))
    for s, m in zip(scenes, maps):
        values = set(np.unique(m).tolist())
        assert values - {0} and len(values) == 2  # one garment: background + its class + 1
        # the 14x14 square at intensity 200 (g = 0.78 >= 0.25) scaled by side/28: about (side/2)^2 pixels,
        # side in [16, 32] for item_scale (0.25, 0.5) of 64 -> between ~64 and ~256 labelled pixels
        assert 40 <= (m > 0).sum() <= 300


def test_fold_classes():
    assert fold_classes("pascal", 1) == [5, 6, 7, 8, 9]
    assert fold_classes("coco", 2)[:3] == [2, 6, 10] and len(fold_classes("coco", 2)) == 20
    assert fold_classes("fashion_scenes", 4) == [8, 9]
    with pytest.raises(ValueError, match="fold"):
        fold_classes("pascal", 4)
    with pytest.raises(ValueError, match="dataset"):
        fold_classes("voc", 0)


def test_task_list_is_fixed_and_well_formed():
    by_class = {0: list(range(0, 30)), 1: list(range(30, 45)), 2: [99]}
    eps = build_episodes(by_class, [0, 1, 2], 50, max_shots=5, seed=1, fold=0)
    assert eps == build_episodes(by_class, [0, 1, 2], 50, max_shots=5, seed=1, fold=0)
    assert eps != build_episodes(by_class, [0, 1, 2], 50, max_shots=5, seed=2, fold=0)
    for ep in eps:
        assert ep.class_id in (0, 1)  # class 2 has too few images for 1 query + 5 supports
        assert ep.query not in ep.supports and len(set(ep.supports)) == 5
        assert ep.query in by_class[ep.class_id] and set(ep.supports) <= set(by_class[ep.class_id])
    with pytest.raises(ValueError, match="images an episode needs"):
        build_episodes({0: [1, 2]}, [0], 3, max_shots=5)


def test_preprocess_pads_with_geometry_mask():
    img = np.full((30, 60, 3), 255, dtype=np.uint8)
    x, valid = preprocess_image(img, 40, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    # long side 60 -> 40: 20 x 40 image area, then zero padding below
    assert x.shape == (3, 40, 40) and valid[:20].all() and not valid[20:].any()
    assert torch.allclose(x[:, :20], torch.ones(3, 20, 40)) and (x[:, 20:] == 0).all()
    lab = preprocess_label(np.ones((30, 60), dtype=np.uint8), 40)
    assert (lab[:20] == 1).all() and (lab[20:] == 255).all()


def test_make_episode_handles_gray_rgba_and_rejects_bad_masks():
    gray = Image.fromarray(np.full((20, 30), 128, dtype=np.uint8))
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[5:10, 5:10] = 1
    batch = make_episode([gray, rgba], [mask, mask], rgba, image_size=32)
    assert batch["support_images"].shape == (1, 2, 3, 32, 32) and batch["support_masks"].shape == (1, 2, 32, 32)
    assert batch["query_valid"][0, 0, :21].all() and not batch["query_valid"][0, 0, 22:].any()  # 20*32/30 = 21.3
    with pytest.raises(ValueError, match="no foreground"):
        make_episode([gray], [np.zeros((20, 30))], gray)
    with pytest.raises(ValueError, match=r"support_masks\[0\] has size"):
        make_episode([gray], [np.ones((10, 10))], gray)
    with pytest.raises(ValueError, match="as many support masks"):
        make_episode([gray, gray], [mask], gray)
    with pytest.raises(ValueError, match="query_image"):
        make_episode([gray], [mask], np.zeros((2, 3, 4, 5)))


def test_collate_pads_original_labels():
    items = [
        {"query_mask_original": torch.zeros(2, 3, dtype=torch.long), "class_id": torch.tensor(1)},
        {"query_mask_original": torch.ones(4, 2, dtype=torch.long), "class_id": torch.tensor(2)},
    ]
    out = collate_episodes(items)
    assert out["query_mask_original"].shape == (2, 4, 3)
    assert (out["query_mask_original"][0, 2:] == 255).all() and (out["query_mask_original"][1, :, 2] == 255).all()


@pytest.fixture(scope="module")
def tiny_module():
    dm = EpisodicDataModule(
        folds=[0, 3], shots=2, episodes_per_fold=3, max_shots=3, image_size=64, canvas_size=64, batch_size=4,
        test_scenes=60, val_scenes=40, min_foreground_pixels=32,
    )  # fmt: skip
    return dm


def test_datamodule_batches_have_the_documented_keys_and_shapes(tiny_module):
    batch = next(iter(tiny_module.test_dataloader()))
    assert batch["support_images"].shape == (4, 2, 3, 64, 64)
    assert batch["support_masks"].shape == (4, 2, 64, 64) and batch["query_image"].shape == (4, 1, 3, 64, 64)
    assert batch["query_mask"].shape == (4, 1, 64, 64) and batch["query_mask_original"].shape == (4, 64, 64)
    assert batch["query_valid"].all()  # scenes are rendered at the input size: nothing padded
    assert (batch["support_masks"] == 1).flatten(2).any(-1).all()  # every support holds its class
    assert set(batch["fold"].tolist()) <= {0, 3} and batch["support_index"].shape == (4, 2)
    pool = tiny_module.pool("test")
    for i in range(4):  # masks are the episode class of the pool's label maps
        expected = torch.from_numpy(pool.label(int(batch["query_index"][i])).astype(np.int64)) == batch["class_id"][i] + 1
        assert torch.equal(batch["query_mask_original"][i] == 1, expected)


def test_shots_share_queries_and_nest_supports(tiny_module):
    pool = tiny_module.pool("test")
    eps = tiny_module.episodes("test")
    one, three = EpisodeDataset(pool, eps, 1, 64), EpisodeDataset(pool, eps, 3, 64)
    assert torch.equal(one[2]["query_image"], three[2]["query_image"])
    assert torch.equal(one[2]["support_images"][0], three[2]["support_images"][0])


def test_pool_splits_differ_and_val_comes_from_train_images():
    val = FashionScenePool("val", 3, 64)
    test = FashionScenePool("test", 3, 64)
    assert not np.array_equal(val.image(0), test.image(0))
    with pytest.raises(ValueError, match="split"):
        FashionScenePool("dev", 3, 64)


def test_datamodule_argument_errors():
    with pytest.raises(ValueError, match="shots"):
        EpisodicDataModule(shots=11)
    with pytest.raises(ValueError, match="exactly one fold"):
        EpisodicDataModule(folds=[0, 1], base_training=True)
    with pytest.raises(ValueError, match="root"):
        EpisodicDataModule(dataset="pascal")


def test_scenes_are_scored_at_canvas_size_when_the_input_is_upsampled():
    dm = EpisodicDataModule(folds=[1], shots=1, episodes_per_fold=2, max_shots=1, image_size=96, canvas_size=64,
                            batch_size=2, test_scenes=40, min_foreground_pixels=32)  # fmt: skip
    batch = next(iter(dm.test_dataloader()))
    assert batch["query_image"].shape == (2, 1, 3, 96, 96) and batch["query_mask_original"].shape == (2, 64, 64)
    assert batch["query_size"].tolist() == [[64, 64]] * 2 and batch["query_resized_size"].tolist() == [[96, 96]] * 2


def test_pascal_list_pool_reads_images_labels_and_filters_small_masks(tmp_path, monkeypatch):
    monkeypatch.setenv("VLKIT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "SegmentationClassAug").mkdir()
    lines = []
    for i in range(7):
        label = np.zeros((40, 50), dtype=np.uint8)
        label[0:20, 0:20] = 6  # class id 5 (label value 6), 400 pixels
        label[30:32, 0:5] = 7  # class id 6, only 10 pixels: below the threshold
        label[39] = 255  # void row
        Image.fromarray(label).save(tmp_path / "SegmentationClassAug" / f"{i}.png")
        Image.fromarray(np.full((40, 50, 3), 10 * i, dtype=np.uint8)).save(tmp_path / "JPEGImages" / f"{i}.jpg")
        lines.append(f"JPEGImages/{i}.jpg SegmentationClassAug/{i}.png")
    (tmp_path / "val.txt").write_text("\n".join(lines))
    dm = EpisodicDataModule(dataset="pascal", root=str(tmp_path), test_list=str(tmp_path / "val.txt"), folds=[1],
                            shots=2, max_shots=2, episodes_per_fold=3, image_size=32, batch_size=3,
                            min_foreground_pixels=100)  # fmt: skip
    by_class = dm.pool("test").class_to_indices(100)
    assert by_class[5] == list(range(7)) and by_class[6] == []
    batch = next(iter(dm.test_dataloader()))
    assert (batch["class_id"] == 5).all()  # the only class of fold 1 (classes 5..9) with enough images
    assert batch["query_mask_original"].shape == (3, 40, 50) and batch["query_size"][0].tolist() == [40, 50]
    # long side 50 -> 32: 26 x 32 image area (40 * 32 / 50 = 25.6 -> 26), padding below is not valid
    assert batch["query_resized_size"][0].tolist() == [26, 32]
    assert batch["query_valid"][0, 0, :26].all() and not batch["query_valid"][0, 0, 26:].any()
    assert (batch["query_mask_original"][0, 39] == 255).all() and batch["query_mask_original"][0, :20, :20].eq(1).all()



def test_list_pool_class_scan_is_cached_atomically_under_the_cache_root(tmp_path, monkeypatch):
    from vlkit.data.segmentation_lists import SegmentationListPool

    monkeypatch.setenv("VLKIT_CACHE", str(tmp_path / "cache"))
    lines = []
    for i in range(3):
        label = np.zeros((10, 10), dtype=np.uint8)
        label[:5, :5] = i + 1  # class id i, 25 pixels
        Image.fromarray(label).save(tmp_path / f"{i}.png")
        lines.append(f"{i}.jpg {i}.png")
    (tmp_path / "val.txt").write_text("\n".join(lines))
    pool = SegmentationListPool(str(tmp_path), str(tmp_path / "val.txt"), "pascal")
    first = pool.class_to_indices(20)
    assert first[0] == [0] and first[1] == [1] and first[2] == [2] and first[3] == []
    files = sorted(p.name for p in (tmp_path / "cache" / "episodes").iterdir())
    assert len(files) == 1 and files[0].endswith("_min20.json")  # no temporary file left behind
    for i in range(3):  # the second scan reads the JSON, not the (now missing) labels
        (tmp_path / f"{i}.png").unlink()
    assert pool.class_to_indices(20) == first

def test_base_training_labels_ignore_novel_classes():
    from vlkit.data.episodes import BaseSegmentationDataset

    dm = EpisodicDataModule(folds=[0], image_size=64, canvas_size=64, base_training=True, train_scenes=20)
    assert dm.base_classes() == [2, 3, 4, 5, 6, 7, 8, 9]  # fold 0's novel classes are 0 and 1
    pool = dm.pool("train")
    data = BaseSegmentationDataset(pool, dm.base_classes(), 64)
    for i in range(5):
        raw = torch.from_numpy(pool.label(i).astype(np.int64))
        label = data[i]["label"]
        assert torch.equal(label == 255, (raw == 1) | (raw == 2))  # novel pixels ignored
        assert torch.equal(label == 0, raw == 0)
        assert torch.equal(label[raw == 3], torch.ones_like(label[raw == 3]))  # class 2 -> base index 1
        assert torch.equal(label[raw == 10], torch.full_like(label[raw == 10], 8))  # class 9 -> base index 8
