"""``imagefolder:`` data never serves the same images as train and test: either train/ and test/ folders,
or an explicit seeded split (``?test_fraction=F&seed=S``) that every result row writes down."""

import pytest
import torch
from PIL import Image

from vlkit.data.fewshot import build_dataset, describe_split, parse_imagefolder, split_image_folder
from vlkit.errors import ConfigError


def _write_images(folder, counts: dict[str, int]) -> None:
    for cls, n in counts.items():
        (folder / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (20 * i % 255, 40, 60)).save(folder / cls / f"{i}.png")


def _paths(dataset) -> set[str]:
    return {dataset.inner.samples[i][0] for i in dataset.indices}


@pytest.fixture
def flat(tmp_path):
    root = tmp_path / "flat"
    _write_images(root, {"cat": 10, "dog": 5, "sea_horse": 3})
    return root


def test_train_and_test_folders_are_read_separately(tmp_path):
    _write_images(tmp_path / "train", {"cat": 3, "dog": 3})
    _write_images(tmp_path / "test", {"cat": 2, "dog": 2})
    train, test = build_dataset(f"imagefolder:{tmp_path}", "train"), build_dataset(f"imagefolder:{tmp_path}", "test")
    assert (len(train), len(test)) == (6, 4)
    assert not _paths(train) & _paths(test) and train.fingerprint != test.fingerprint
    assert describe_split(f"imagefolder:{tmp_path}") == "folders train/ test/"
    with pytest.raises(ConfigError, match=r"must have a val/ folder for the 'val' split, got only \['train/', 'test/'\]"):
        build_dataset(f"imagefolder:{tmp_path}", "val")


def test_one_folder_without_an_explicit_split_is_refused(flat):
    # formerly both splits read this same folder, so labelled shots could be test images
    for split in ("train", "test"):
        with pytest.raises(ConfigError, match=r"train/ and test/ class folders inside, or .*\?test_fraction=0.2&seed=0.*no train/ or test/ folder"):
            build_dataset(f"imagefolder:{flat}", split)


def test_a_seeded_split_is_disjoint_per_class_and_reproducible(flat):
    name = f"imagefolder:{flat}?test_fraction=0.3&seed=0"
    train, test = build_dataset(name, "train"), build_dataset(name, "test")
    # round(n * 0.3) per class, at least 1 and at most n - 1: cat 10 -> 3, dog 5 -> 2 (1.5 rounds to 2), sea horse 3 -> 1
    assert torch.bincount(test.labels, minlength=3).tolist() == [3, 2, 1]
    assert torch.bincount(train.labels, minlength=3).tolist() == [7, 3, 2]
    assert not _paths(train) & _paths(test) and len(_paths(train) | _paths(test)) == 18
    assert train.classnames == ["cat", "dog", "sea horse"]
    # labels come from the folder names and agree with what the items return
    assert [train[i][1] for i in range(len(train))] == train.labels.tolist()
    assert train.fingerprint != test.fingerprint and "test-f0.3-s0" in test.fingerprint
    assert _paths(build_dataset(name, "test")) == _paths(test)
    other = build_dataset(f"imagefolder:{flat}?test_fraction=0.3&seed=1", "test")
    assert _paths(other) != _paths(test)
    assert describe_split(name) == "seeded test_fraction=0.3 seed=0"


def test_split_image_folder_on_labels():
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    train, test = split_image_folder(labels, 0.5, seed=3)
    assert sorted(train.tolist() + test.tolist()) == list(range(6))
    assert torch.bincount(labels[test]).tolist() == [2, 1]
    everything_test = split_image_folder(labels, 1.0, seed=3)
    assert everything_test[0].numel() == 0 and everything_test[1].tolist() == list(range(6))


def test_test_fraction_one_is_all_test_and_no_train(flat):
    name = f"imagefolder:{flat}?test_fraction=1"
    assert len(build_dataset(name, "test")) == 18
    with pytest.raises(ConfigError, match="leaves no images for the 'train' split"):
        build_dataset(name, "train")


def test_an_empty_image_folder_names_the_folder_and_the_extensions(tmp_path):
    with pytest.raises(ConfigError, match=rf"image folder '{tmp_path}' must hold <class>/<image> files with one of the extensions .jpg, .jpeg, .png.*got no class folders"):
        build_dataset(f"imagefolder:{tmp_path}?test_fraction=0.5", "test")
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(ConfigError, match=r"train' must hold .*\.webp, got no images in class folder\(s\) \['cat'\]"):
        build_dataset(f"imagefolder:{tmp_path}", "train")


@pytest.mark.parametrize(
    "query, expected",
    [
        ("test_fraction=0", r"test_fraction must be in \(0, 1\], got 0.0"),
        ("test_fraction=1.5", r"test_fraction must be in \(0, 1\], got 1.5"),
        ("test_fraction=abc", r"test_fraction must be a number in \(0, 1\] and seed an integer"),
        ("test_fraction=0.2&seed=x", r"seed an integer"),
        ("fraction=0.2", r"options after '\?' must be among \['test_fraction', 'seed'\], got 'fraction'"),
        ("seed=1", r"must give test_fraction"),
    ],
)
def test_bad_split_options_are_config_errors(flat, query, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        parse_imagefolder(f"imagefolder:{flat}?{query}")
    assert info.value.argument == "dataset"


def test_a_class_with_one_image_cannot_be_split(tmp_path):
    _write_images(tmp_path, {"cat": 4, "dog": 1})
    with pytest.raises(ConfigError, match=r"needs >= 2 images in every class \(one per side\), got 1 in class 1"):
        build_dataset(f"imagefolder:{tmp_path}?test_fraction=0.5", "train")


def test_a_missing_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="must be an existing directory, got .*nowhere"):
        build_dataset(f"imagefolder:{tmp_path / 'nowhere'}", "test")


def test_evaluate_rows_write_the_split_down(flat):
    from vlkit import fewshot

    name = f"imagefolder:{flat}?test_fraction=0.5&seed=0"
    rows = fewshot.evaluate(method="tip-adapter", backbone="tiny-random", dataset=name, shots=1, subset_size=None,
                            cache_dir=None, accelerator="cpu")
    # test side: cat 5, dog round(2.5) = 2 (banker's rounding), sea horse round(1.5) = 2 -> 9 images
    assert rows[0]["n_test"] == 9
    assert rows[0]["dataset"] == name and rows[0]["split"] == "seeded test_fraction=0.5 seed=0"
