"""create_backbone's user errors: unknown names, paths that are not there, and open_clip checkpoints that
do not fit their architecture (loaded strictly: a half-empty checkpoint is refused, not half-loaded)."""

import json
import pickle

import pytest
import torch

from vlkit.errors import ConfigError
from vlkit.models.backbones import _TINY_CLIP_CFG, create_backbone

TINY = "vlkit-errors-tiny"
WIDE = "vlkit-errors-tiny-wide"  # same layers, embed_dim 48 instead of 32: every projection differs in shape


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """Register two tiny open_clip architectures (open_clip's public add_model_config) and save checkpoints."""
    import open_clip

    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / f"{TINY}.json").write_text(json.dumps(_TINY_CLIP_CFG))
    (folder / f"{WIDE}.json").write_text(json.dumps(dict(_TINY_CLIP_CFG, embed_dim=48)))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.CLIP(**_TINY_CLIP_CFG)
    state = model.state_dict()
    files = tmp_path_factory.mktemp("checkpoints")
    paths = {"full": files / "tiny.pt", "half": files / "half.pt", "pickle": files / "object.pt"}
    torch.save({"state_dict": state}, paths["full"])
    keys = sorted(state)
    # len(keys) // 2 tensors missing: exactly the most the former strict=False load accepted
    torch.save({k: state[k] for k in keys[: len(keys) - len(keys) // 2]}, paths["half"])
    torch.save({"state_dict": state, "extra": pickle.PickleError("not plain data")}, paths["pickle"])
    return model, {k: str(v) for k, v in paths.items()}


def test_a_full_checkpoint_loads_exactly_and_keeps_its_fingerprint(tiny_checkpoints):
    model, paths = tiny_checkpoints
    backbone = create_backbone(paths["full"], arch=TINY)
    for name, tensor in model.state_dict().items():
        assert torch.equal(backbone.model.state_dict()[name], tensor), name
    # the fingerprint names the architecture and a digest of (path, size, mtime): stable for the same file
    assert backbone.fingerprint.startswith(f"open_clip:{TINY}:file-") and len(backbone.fingerprint.split("file-")[1]) == 12


def test_a_checkpoint_missing_half_its_tensors_is_refused(tiny_checkpoints):
    model, paths = tiny_checkpoints
    missing = len(model.state_dict()) // 2
    with pytest.raises(ConfigError, match=f"'{paths['half']}' does not match architecture '{TINY}': {missing} missing tensors") as info:
        create_backbone(paths["half"], arch=TINY)
    assert info.value.argument == "backbone" and "\n" not in str(info.value)


def test_a_checkpoint_of_another_architecture_is_refused(tiny_checkpoints):
    _, paths = tiny_checkpoints
    # embed_dim 32 -> 48 changes text_projection (32x48) and visual.proj (32x48)
    with pytest.raises(ConfigError, match=f"does not match architecture '{WIDE}': 2 shape mismatches"):
        create_backbone(paths["full"], arch=WIDE)


def test_a_checkpoint_holding_objects_is_not_unpickled(tiny_checkpoints):
    _, paths = tiny_checkpoints
    with pytest.raises(ConfigError, match="refuses to unpickle"):
        create_backbone(paths["pickle"], arch=TINY)


def test_a_checkpoint_file_needs_a_known_architecture(tiny_checkpoints):
    _, paths = tiny_checkpoints
    with pytest.raises(ConfigError, match="arch must name the open_clip architecture") as info:
        create_backbone(paths["full"])
    assert info.value.argument == "arch"
    with pytest.raises(ConfigError, match=r"arch must be an open_clip architecture .*got 'ViT-B-3' \(closest: ViT-B-32"):
        create_backbone(paths["full"], arch="ViT-B-3")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("tiny-randm", r"got 'tiny-randm': unknown backbone \(closest presets: tiny-random"),
        # a name with a slash is looked up as a preset first: the typo gets its closest preset, not "no file"
        ("ViT-B-32/opnai", r"tag of open_clip architecture 'ViT-B-32' must be .*got 'opnai' \(closest: openai\)"),
        ("ViT-B-32/laion2b_s34b_b7", r"architecture 'ViT-B-32' must be one of its \d+ tags .*\(closest: laion2b_s34b_b79k"),
        ("open_clip:ViT-B-33/openai", r"arch must be an open_clip architecture .*got 'ViT-B-33' \(closest: ViT-B-32"),
        ("my-models/clip.pt", r"got 'my-models/clip.pt': no preset, open_clip <arch>/<tag>, file or directory of that name"),
        ("/no/such/dir/", r"got '/no/such/dir/': no preset, open_clip <arch>/<tag>, file or directory"),
    ],
)
def test_unknown_names_say_what_they_are_not(name, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        create_backbone(name)
    assert info.value.argument in ("backbone", "arch") and "\n" not in str(info.value)
    assert "does not exist" not in str(info.value)


def test_a_directory_without_a_clip_config_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=f"backbone directory '{tmp_path}' must hold the config.json"):
        create_backbone(str(tmp_path))
