"""MiniOneRec on SmolLM2-135M-Instruct (LoRA and full fine-tuning): the configs, and their whole path (SFT on the
authors' task mix, test, RL from the SFT checkpoint, test, paired results) through the runner and the CLI with a
tiny random Llama (SmolLM2's tokenizer and vocabulary, 16-d, one layer) in place of the 135M weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from recsys import experiments
from recsys.data.prompts import TASKS
from recsys.data.semantic_ids import random_semantic_ids
from recsys.data.sequences import synthetic_seqrec
from recsys.methods.minionerec import LitMiniOneRec, LitMiniOneRecRL
from vlkit.checkpoints import load_checkpoint

REAL_DATASETS = ("amazon18-industrial", "amazon18-office", "movielens")


@pytest.mark.parametrize("dataset", REAL_DATASETS)
def test_smollm2_configs_hold_the_authors_task_mix_and_build(dataset):
    for stage in experiments.SMOLLM2_STAGES:
        path = experiments.config_path(dataset, stage)
        config = yaml.safe_load(path.read_text())
        args = config["model"]["init_args"]
        lora = stage.endswith("lora")
        assert config["data"]["init_args"]["dataset"] == dataset
        assert args["sid_path"] == f"runs/minionerec/{dataset}/sid_index.json"
        assert args["decoder"]["backbone"] == "smollm2" and (args["decoder"]["lora_r"] > 0) == lora
        assert sorted(args["tasks"]) == sorted(TASKS)  # all six alignment tasks in one template (the authors' mix)
        assert args["evaluation"]["exact_ranking"] is True and args["evaluation"].get("max_exact_rows") is None
        cls = LitMiniOneRecRL if stage.startswith("rl") else LitMiniOneRec
        assert config["model"]["class_path"] == f"recsys.methods.minionerec.{cls.__name__}"
        module = cls(**args)  # every settings group checks itself (the weights load later, in build)
        assert module.decoder_settings.lora_r == (16 if lora else 0)
        if stage.startswith("rl"):
            assert module.rl.updates_per_rollout >= 1 and module.rl.group_size == 16


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from vlkit.models.pretrained import smollm2_dir

    try:
        source = smollm2_dir()
    except FileNotFoundError as err:  # pragma: no cover - depends on the offline package
        pytest.skip(str(err))
    folder = tmp_path_factory.mktemp("tiny_llama")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(source) / name, folder / name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def _layer_weights(state: dict, prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The decoder layers' frozen-or-trained weights by their plain Llama name (peft's wrapping names removed)."""
    out = {}
    for key, value in state.items():
        if "layers." in key and key.endswith("weight") and "lora_" not in key:
            name = key[len(prefix):] if key.startswith(prefix) else key
            out[name.replace("base_model.model.", "").replace(".base_layer", "")] = value
    return out


# LoRA in the default tier (~12 s of CPU); full fine-tuning takes the same path with lora_r 0 (slow tier)
@pytest.mark.parametrize("variant", ["lora", pytest.param("full", marks=pytest.mark.slow)])
def test_sft_then_rl_through_the_runner_on_a_tiny_random_llama(tmp_path, monkeypatch, tiny_llama, variant):
    from transformers import LlamaForCausalLM

    # the Industrial SmolLM2 configs, unchanged but for the data (synthetic, 16 of its val/test rows), the backbone
    # (the tiny Llama), the length of training and 10 test beams (SmolLM2's 49k-token vocabulary makes every beam
    # a 49k-wide logits row); semantic IDs: unique random ones written where the rqvae stage would write them
    real_config = experiments.config_path
    monkeypatch.setattr(experiments, "config_path", lambda dataset, stage: real_config("amazon18-industrial", stage))
    root = tmp_path / "synthetic"
    root.mkdir()
    data = synthetic_seqrec()
    random_semantic_ids(data.item_ids, 8, 2).save(root / "sid_index.json")
    sft, rl = f"sft-smollm2-{variant}", f"rl-smollm2-{variant}"
    results = experiments.main([
        "--dataset", "synthetic", "--stages", f"{sft},{rl}", "--out", str(tmp_path),
        "--data.init_args.dataset=synthetic", "--data.init_args.max_train_samples=null",
        "--data.init_args.max_eval_samples=16", f"--model.init_args.decoder.backbone={tiny_llama}",
        "--model.init_args.evaluation.val_num_beams=5", "--model.init_args.evaluation.test_num_beams=10",
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1",
        "--trainer.val_check_interval=1.0",
    ])
    for stage in (sft, rl):
        r = results[stage]
        assert r["test/invalid_items"] == 0.0 and r["test/rows"] == r["test/exact_rows"] == 16  # every test row, both ways
        assert 0.0 <= r["test/hr@10"] <= 1.0 and 0.0 <= r["test/exact_ndcg@10"] <= 1.0
    paired = results[rl]["paired"][sft]  # RL minus its SFT start, on the same 16 rows
    assert paired["reported"]["hr@10"]["n"] == paired["exact"]["hr@10"]["n"] == 16
    assert paired["exact"]["ndcg@10"]["low"] <= paired["exact"]["ndcg@10"]["mean"] <= paired["exact"]["ndcg@10"]["high"]
    # what training moved: LoRA keeps every pretrained layer weight and trains its adapters; full fine-tuning
    # moves the layer weights themselves
    original = _layer_weights(LlamaForCausalLM.from_pretrained(tiny_llama).state_dict(), prefix="")
    for stage in (sft, rl):
        state = load_checkpoint(experiments.best_checkpoint(root / stage), (LitMiniOneRec, LitMiniOneRecRL))["state_dict"]
        trained = _layer_weights(state)
        assert set(trained) == set(original)
        moved = {name for name in original if not torch.equal(trained[name], original[name])}
        if variant == "lora":
            assert moved == set()
            assert any(key.endswith("lora_B.default.weight") and value.abs().sum() > 0 for key, value in state.items())
        else:
            assert moved  # every layer weight is trainable; the SFT steps changed them
