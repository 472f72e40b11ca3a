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
