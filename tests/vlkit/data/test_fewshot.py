import json

import pytest
import torch
from torch.utils.data import Dataset

from vlkit.data.features import encode_dataset, feature_cache_path
from vlkit.data.fewshot import FewShotDataModule, sample_few_shot, sample_subset
from vlkit.data.prompts import load_class_prompts, save_class_prompts
from vlkit.models.backbones import create_backbone


class _Squares(Dataset):
    """Six solid-grey images in two classes."""

    fingerprint = "squares-v1"
    classnames = ["dark", "light"]

    def __len__(self):
        return 6

    def __getitem__(self, i):
        from PIL import Image

        return Image.new("RGB", (32, 32), (40 * i,) * 3), int(i >= 3)


class _CountingBackbone(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = create_backbone("tiny-random")
        self.preprocess, self.fingerprint, self.calls = self.inner.preprocess, "counting", 0

    def encode_image(self, images):
        self.calls += 1
        return self.inner.encode_image(images)


def test_few_shot_sampling_is_seeded_and_per_class():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    a, b = sample_few_shot(labels, 2, seed=5), sample_few_shot(labels, 2, seed=5)
    assert torch.equal(a, b)
    assert torch.bincount(labels[a]).tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="shots=4 but class 0 has only 3"):
        sample_few_shot(labels, 4, seed=0)
    assert sample_subset(10, 4, seed=0).tolist() == sorted(sample_subset(10, 4, seed=0).tolist())
    assert sample_subset(10, None, seed=0).tolist() == list(range(10))


def test_feature_cache_skips_the_encoder_and_rebuilds_when_corrupt(tmp_path):
    bb = _CountingBackbone()
    feats, labels = encode_dataset(bb, _Squares(), batch_size=4, cache_dir=tmp_path, progress=False)
    assert feats.shape == (6, bb.inner.embed_dim) and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.allclose(feats.norm(dim=-1), torch.ones(6))
    calls = bb.calls
    again, _ = encode_dataset(bb, _Squares(), batch_size=4, cache_dir=tmp_path, progress=False)
    assert bb.calls == calls and torch.equal(again, feats)  # second run: no encoder call
    path, _ = feature_cache_path(bb, _Squares(), tmp_path)
    path.write_bytes(b"truncated garbage")
    rebuilt, _ = encode_dataset(bb, _Squares(), batch_size=4, cache_dir=tmp_path, progress=False)
    assert bb.calls == 2 * calls and torch.allclose(rebuilt, feats, atol=1e-6)
    assert not list(path.parent.glob("*.tmp"))  # no temporary file left behind


def test_non_finite_features_are_refused(tmp_path):
    bb = _CountingBackbone()
    bb.encode_image = lambda images: torch.full((images.shape[0], 4), float("nan"))
    with pytest.raises(ValueError, match="non-finite"):
        encode_dataset(bb, _Squares(), cache_dir=None, progress=False)


def test_prompt_files_validate(tmp_path):
    path = save_class_prompts(tmp_path / "p.json", {"dark": ["a dark square."], "light": ["a light square."]}, {"seed": 1})
    assert load_class_prompts(path, ["dark", "light"]) == {"dark": ["a dark square."], "light": ["a light square."]}
    assert json.loads((tmp_path / "p.json.provenance.json").read_text()) == {"seed": 1}
    with pytest.raises(ValueError, match=r"lacks classes \['grey'\]"):
        load_class_prompts(path, ["dark", "light", "grey"])
    with pytest.raises(ValueError, match="duplicate"):
        load_class_prompts(path, ["dark", "dark"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_class_prompts(tmp_path / "bad.json", ["dark"])
    (tmp_path / "empty.json").write_text(json.dumps({"dark": []}))
    with pytest.raises(ValueError, match="non-empty list"):
        load_class_prompts(tmp_path / "empty.json", ["dark"])


def test_datamodule_serves_dict_batches(tmp_path):
    dm = FewShotDataModule(subset_size=40, shots=2, augment_views=1, batch_size=16, eval_batch_size=16, cache_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="connect"):
        dm.test_dataloader()
    dm.connect(create_backbone("tiny-random"))
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"index", "features", "strong_features", "label"}
    assert batch["features"].shape == batch["strong_features"].shape == (16, 32)
    assert dm.shot_features.shape == (20, 32) and torch.bincount(dm.shot_labels).tolist() == [2] * 10
    test = next(iter(dm.test_dataloader()))
    assert set(test) == {"index", "features", "label"} and test["index"].tolist() == list(range(16))
    assert len(dm.classnames) == 10


def test_connect_leaves_the_global_rng_alone(tmp_path):
    dm = FewShotDataModule(subset_size=20, augment_views=1, cache_dir=str(tmp_path))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    dm.connect(create_backbone("tiny-random", seed=7))  # seeded weights, then a seeded augmented view
    next(iter(dm.test_dataloader()))  # evaluating draws nothing from the global RNG either
    assert torch.equal(torch.rand(3), expected)


def test_training_order_depends_on_seed_and_epoch_only(tmp_path):
    dm = FewShotDataModule(subset_size=30, augment_views=2, batch_size=30, seed=4, cache_dir=str(tmp_path))
    dm.connect(create_backbone("tiny-random"))

    def epoch_batch(loader, epoch):
        loader.sampler.set_epoch(epoch)
        return next(iter(loader))

    first, again = dm.train_dataloader(), dm.train_dataloader()
    b0, b1 = epoch_batch(first, 0), epoch_batch(first, 1)
    assert not torch.equal(b0["index"], b1["index"])  # a new permutation each epoch
    torch.manual_seed(999)  # the global RNG plays no part
    resumed = epoch_batch(again, 1)  # a fresh loader jumping straight to epoch 1, as after a resume
    assert torch.equal(resumed["index"], b1["index"]) and torch.equal(resumed["strong_features"], b1["strong_features"])
    assert sorted(b1["index"].tolist()) == list(range(30))
