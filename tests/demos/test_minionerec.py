import pytest


def test_build_demo_and_its_callbacks():
    gr = pytest.importorskip("gradio")
    from demos.minionerec import _resolve_titles, allowed_next, build_demo, load_recommender, recommend_table

    demo = build_demo()
    assert isinstance(demo, gr.Blocks)
    module, data = load_recommender()
    sample = data.splits["test"][0]
    rows = recommend_table(module, data, list(sample.history))
    assert len(rows) == 10 and len({r[1] for r in rows}) == 10 and all(r[1] in data.items for r in rows)
    # level 0 of random-8x2 IDs over 48 items: 8 codes; a complete ID allows only EOS; a bogus one nothing
    assert allowed_next(module, "").startswith("8 allowed")
    assert "complete ID" in allowed_next(module, module.sids.sid_string(0))
    assert "nothing" in allowed_next(module, "<a_99>")
    assert _resolve_titles(data.title("3"), data) == ["3"]
    with pytest.raises(ValueError, match="unknown item title"):
        _resolve_titles("no such thing", data)


def test_load_recommender_maps_a_checkpoint_with_flat_hyperparameters_onto_the_groups(tmp_path):
    # a checkpoint written before the settings groups saved every argument flat (hidden_size, lr, ...)
    import torch

    from demos.minionerec import load_recommender
    from recsys.data.sequences import synthetic_seqrec
    from recsys.methods.minionerec import LitMiniOneRec

    module = LitMiniOneRec(sid_path="random-8x2", decoder=dict(hidden_size=24, num_layers=1, num_heads=3))
    module.build(synthetic_seqrec())
    name, weight = next((k, v) for k, v in module.state_dict().items() if v.is_floating_point())
    with torch.no_grad():
        weight.add_(1.0)  # weights a fresh build cannot reproduce
    flat = {"sid_path": "random-8x2", "backbone": "scratch", "hidden_size": 24, "num_layers": 1, "num_heads": 3,
            "max_words": 3000, "lora_r": 0, "lora_alpha": 16, "tasks": ("sid_seq",), "max_prompt_tokens": 384,
            "lr": 0.002, "weight_decay": 0.01, "warmup_steps": 100, "val_num_beams": 7, "test_num_beams": 9,
            "exact_ranking": False, "max_exact_rows": 5, "ks": (1, 10), "init_checkpoint": None}
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": flat,
                "vlkit_class": "recsys.methods.minionerec.LitMiniOneRec",
                "datamodule_hyper_parameters": {"dataset": "synthetic"}}, path)
    loaded, _ = load_recommender(str(path))
    # the default decoder (hidden 128) could not take these weights: the flat sizes were read
    assert (loaded.decoder_settings.hidden_size, loaded.decoder_settings.num_heads) == (24, 3)
    assert loaded.optimizer_settings.lr == 0.002 and loaded.optimizer_settings.warmup_steps == 100
    assert loaded.evaluation_settings.val_num_beams == 7 and loaded.evaluation_settings.ks == (1, 10)
    assert loaded.hparams["evaluation"]["max_exact_rows"] == 5
    assert torch.equal(loaded.state_dict()[name], weight)
