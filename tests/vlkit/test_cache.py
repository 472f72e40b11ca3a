"""vlkit.cache: the cache root setting, atomic writes and the keyed cache."""

import os

import pytest
import torch

from vlkit import cache


def test_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("VLKIT_CACHE", str(tmp_path / "root"))
    assert cache.cache_root() == tmp_path / "root"
    assert cache.cache_root("features") == tmp_path / "root" / "features"
    assert (tmp_path / "root" / "features").is_dir()
    monkeypatch.delenv("VLKIT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_root() == tmp_path / "home" / ".cache" / "vlkit"


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "a.txt"
    cache.atomic_write_text(target, "old")

    def broken(tmp):
        with open(tmp, "w") as handle:
            handle.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        cache.atomic_write(target, broken)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]  # the temporary file is gone


def test_keyed_cache_round_trip_and_misses(tmp_path):
    store = cache.KeyedCache("features", directory=tmp_path)
    key = {"backbone": "tiny", "split": "test"}
    assert store.get(key) is None
    calls = []
    payload = store.get_or_build(key, lambda: calls.append(1) or {"x": torch.arange(3)})
    again = store.get_or_build(key, lambda: calls.append(1) or {"x": torch.zeros(3)})
    assert calls == [1] and torch.equal(again["x"], torch.arange(3)) and torch.equal(payload["x"], torch.arange(3))
    # key order does not matter; another key misses
    assert store.get({"split": "test", "backbone": "tiny"}) is not None
    assert store.get({"backbone": "tiny", "split": "train"}) is None
    # a check that fails is a miss; a corrupt file is a miss
    assert store.get(key, check=lambda p: p["x"].numel() == 4) is None
    store.path(key).write_bytes(b"not a torch file")
    assert store.get(key) is None
    # a file stored for another key under this name (hash clash / renamed file) is a miss
    other = cache.KeyedCache("features", directory=tmp_path)
    cache.atomic_torch_save({"__key__": "0" * 40, "payload": {"x": torch.ones(1)}}, other.path(key))
    assert store.get(key) is None


def test_feature_cache_lands_under_vlkit_cache_when_cache_dir_is_none(tmp_path, monkeypatch):
    """End to end: FewShotDataModule(cache_dir=None) encodes into $VLKIT_CACHE/features/, and a second
    DataModule on the same data loads from there without calling the image encoder; an explicit cache_dir
    still wins."""
    from vlkit.data.features import feature_cache_path
    from vlkit.data.fewshot import FewShotDataModule
    from vlkit.models.backbones import create_backbone

    monkeypatch.setenv("VLKIT_CACHE", str(tmp_path / "root"))
    backbone = create_backbone("tiny-random")
    first = FewShotDataModule(subset_size=12, cache_dir=None).connect(backbone)
    files = list((tmp_path / "root" / "features").glob("*.pt"))
    assert len(files) == 1  # one feature set: the 12-image eval subset (no shots, no augmented views)

    def no_encoder(images):
        raise AssertionError("the image encoder ran although the features are cached")

    monkeypatch.setattr(backbone, "encode_image", no_encoder)
    second = FewShotDataModule(subset_size=12).connect(backbone)  # default cache_dir: the same root
    assert torch.equal(second.eval_features, first.eval_features) and second.eval_features.shape[0] == 12
    monkeypatch.undo()
    monkeypatch.setenv("VLKIT_CACHE", str(tmp_path / "root"))
    explicit = FewShotDataModule(subset_size=12, cache_dir=str(tmp_path / "mine")).connect(backbone)
    assert torch.equal(explicit.eval_features, first.eval_features)
    assert len(list((tmp_path / "mine" / "features").glob("*.pt"))) == 1
    assert len(list((tmp_path / "root" / "features").glob("*.pt"))) == 1  # nothing new under the root
    # the file's name is the one feature_cache_path computes for this root
    from torch.utils.data import Subset

    from vlkit.data.fewshot import build_dataset, sample_subset

    data = build_dataset("fashion-mnist", "test")
    subset = Subset(data, sample_subset(len(data), 12, 0).tolist())
    assert feature_cache_path(backbone, subset, tmp_path / "root")[0] == files[0]
