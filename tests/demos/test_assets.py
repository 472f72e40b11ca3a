"""The demos' trained defaults (demos/assets.py) and the MiniOneRec tab that shows them: stored atomically
as one complete build, found again, loaded with their own weights; missing or broken ones are reported as
missing, and the tab then offers to build them instead of showing an untrained model."""

from __future__ import annotations

import json

import pytest
import torch

from vlkit.errors import ConfigError


def _tiny_trained_checkpoint(tmp_path):
    """(checkpoint dict, sid_index.json bytes, a weight name, its value): a tiny LitMiniOneRec on synthetic data
    whose weights were moved away from any fresh build's, written as Lightning would (class recorded)."""
    from recsys.data.semantic_ids import random_semantic_ids
    from recsys.data.sequences import synthetic_seqrec
    from recsys.methods.minionerec import LitMiniOneRec

    data = synthetic_seqrec()
    sid_file = tmp_path / "made" / "sid_index.json"
    random_semantic_ids(data.item_ids, 8, 2, seed=3).save(sid_file)
    module = LitMiniOneRec(sid_path=str(sid_file), decoder=dict(hidden_size=16, num_layers=1, num_heads=2))
    module.build(data)
    name, weight = next((k, v) for k, v in module.state_dict().items() if v.is_floating_point() and v.dim() == 2)
    with torch.no_grad():
        weight.add_(0.5)  # what "trained" means here: weights a fresh build cannot reproduce
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "epoch": 2,
                  "global_step": 30, "datamodule_hyper_parameters": {"dataset": "synthetic"},
                  "optimizer_states": [{"state": {}}]}
    module.on_save_checkpoint(checkpoint)  # records vlkit_class
    return checkpoint, sid_file.read_bytes(), name, weight.clone()


PROVENANCE = {"configs": ["configs/recsys/rqvae/synthetic_tiny.yaml", "configs/recsys/minionerec/synthetic_sft.yaml"],
              "epochs": 3, "kept_epoch": 3, "validation": {"val/hr@10": 0.53125, "val/ndcg@10": 0.25, "val/rows": 64.0},
              "wall_s": 12.0}


@pytest.fixture
def stored(tmp_path):
    """A tiny trained recommender stored as the ``synthetic`` demo asset under ``tmp_path / "assets"``."""
    from demos.assets import store_minionerec_assets

    checkpoint, sid_bytes, name, weight = _tiny_trained_checkpoint(tmp_path)
    record = store_minionerec_assets("synthetic", tmp_path / "assets", checkpoint, sid_bytes, PROVENANCE)
    return tmp_path / "assets", record, name, weight


def test_a_stored_build_is_found_with_its_files_and_provenance(stored):
    from demos.assets import find_minionerec_assets, minionerec_asset_dir
    from vlkit.checkpoints import load_checkpoint

    root, record, _, _ = stored
    found = find_minionerec_assets("synthetic", root)
    assert found == record
    folder = minionerec_asset_dir("synthetic", root)
    assert found["checkpoint"].startswith(str(folder)) and found["sid_path"].startswith(str(folder))
    assert found["model"] == "MiniOneRec SFT: 1-layer, 16-d decoder trained from scratch"
    assert found["steps"] == 30 and found["epochs"] == 3 and found["validation"]["val/hr@10"] == 0.53125
    # the stored checkpoint keeps weights and provenance, not the optimizer state, and loads with weights_only
    saved = load_checkpoint(found["checkpoint"])
    assert "optimizer_states" not in saved and saved["vlkit_class"].endswith("LitMiniOneRec")
    assert find_minionerec_assets("amazon18-office", root) is None  # another data set: nothing built


def test_a_new_build_replaces_the_old_one_and_removes_it(stored, tmp_path):
    from demos.assets import find_minionerec_assets, store_minionerec_assets

    root, first, _, _ = stored
    checkpoint, sid_bytes, _, _ = _tiny_trained_checkpoint(tmp_path / "again")
    second = store_minionerec_assets("synthetic", root, checkpoint, sid_bytes, {**PROVENANCE, "epochs": 5})
    assert second["build"] != first["build"] and find_minionerec_assets("synthetic", root)["epochs"] == 5
    folders = [p.name for p in (root / "minionerec" / "synthetic").iterdir() if p.is_dir()]
    assert folders == [second["build"]]  # the first build's folder is gone


@pytest.mark.parametrize("damage", ["garbage", "format", "dataset", "escape", "missing-file"])
def test_a_broken_record_counts_as_not_built(stored, damage):
    from demos.assets import find_minionerec_assets

    root, record, _, _ = stored
    path = root / "minionerec" / "synthetic" / "asset.json"
    data = json.loads(path.read_text())
    if damage == "garbage":
        path.write_text("{not json")
    elif damage == "format":
        path.write_text(json.dumps({**data, "format": 0}))
    elif damage == "dataset":
        path.write_text(json.dumps({**data, "dataset": "amazon18-industrial"}))
    elif damage == "escape":  # a record naming a folder outside the asset folder is not followed
        path.write_text(json.dumps({**data, "build": "../../.."}))
    else:
        (root / "minionerec" / "synthetic" / record["build"] / "sid_index.json").unlink()
    assert find_minionerec_assets("synthetic", root) is None


def test_the_default_tab_shows_the_stored_recommender_with_its_weights(stored):
    from demos.minionerec import build_demo, load_default_recommender

    root, _, name, weight = stored
    module, data, weights = load_default_recommender("synthetic", str(root))
    assert torch.equal(module.state_dict()[name], weight)  # the stored weights, not a fresh build's
    assert "trained by `make demo-assets`" in weights and "HR@10 53.12 %" in weights and "64 validation rows" in weights
    demo = build_demo(dataset="synthetic", assets_dir=str(root))
    texts = [getattr(b, "value", None) for b in demo.blocks.values() if type(b).__name__ == "Markdown"]
    info = next(t for t in texts if t and "**Model:**" in t)
    assert "**Weights:** trained by `make demo-assets`" in info and "**Data:** the synthetic walk data set" in info
    assert "untrained" not in info.lower()
    button = next(b for b in demo.blocks.values() if getattr(b, "value", None) == "build the trained recommender")
    assert button.visible is False  # nothing to build
    by_user = next(f.fn for f in demo.fns.values() if f.fn.__name__ == "by_user")
    user = sorted(s.user for s in data.splits["test"])[0]
    history, rows, status = by_user(user)
    assert len(rows) == 10 and all(r[1] in data.index for r in rows) and "held-out next item" in status


def test_without_assets_the_tab_offers_to_build_instead_of_an_untrained_model(tmp_path):
    from demos.minionerec import build_demo

    demo = build_demo(dataset="synthetic", assets_dir=str(tmp_path))
    texts = [getattr(b, "value", None) or "" for b in demo.blocks.values() if type(b).__name__ == "Markdown"]
    assert any("is not built yet" in t and "make demo-assets" in t for t in texts)
    assert not any("untrained" in t for t in texts)
    button = next(b for b in demo.blocks.values() if getattr(b, "value", None) == "build the trained recommender")
    assert button.visible is not False
    fns = {f.fn.__name__: f.fn for f in demo.fns.values()}
    with pytest.raises(ConfigError, match="user must be one of"):
        fns["by_user"]("A1")
    rows, message = fns["by_titles"]("anything")
    assert rows == [] and "not built yet" in message
    assert fns["trie_next"]("<a_1>") == "(no recommender loaded yet)"


def test_an_untrained_model_only_when_asked_and_labelled(tmp_path):
    from demos.minionerec import build_demo

    demo = build_demo(untrained=True, assets_dir=str(tmp_path))
    info = next(b.value for b in demo.blocks.values() if type(b).__name__ == "Markdown" and "**Model:**" in (b.value or ""))
    assert info.startswith("**untrained**") and "random initialisation" in info


@pytest.mark.slow
def test_the_build_button_trains_with_the_pipeline_and_reports_progress(tmp_path):
    """The first-launch path: the kit's RQ-VAE + SFT through the CLI on synthetic data (1 short epoch), with
    progress; then the tab shows it. About 20 s on a quiet 2-core machine (two CLI runs)."""
    from demos.assets import find_minionerec_assets
    from demos.minionerec import build_demo

    demo = build_demo(dataset="synthetic", assets_dir=str(tmp_path), build_epochs=1,
                      build_overrides=("--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1"))
    build = next(f.fn for f in demo.fns.values() if f.fn.__name__ == "build_recommender")
    calls: list[tuple[float, str]] = []
    info, users, button = build(progress=lambda fraction, desc=None: calls.append((fraction, desc)))
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert any("semantic IDs" in d for _, d in calls) and any("SFT" in d for _, d in calls)
    assert "trained by `make demo-assets`" in info and "untrained" not in info
    assert users["choices"] and button["visible"] is False
    found = find_minionerec_assets("synthetic", tmp_path)
    assert found["epochs"] == 1 and found["steps"] == 3 and 0.0 <= found["validation"]["val/hr@10"] <= 1.0
    assert not list((tmp_path / "minionerec" / "synthetic").glob(".build-*"))  # the work folder is gone
