import math
import shutil
from pathlib import Path

import pytest
import torch

from recsys.data.sequences import synthetic_seqrec
from recsys.methods.minionerec import LitMiniOneRec, LitMiniOneRecRL

from recsys.experiments import CONFIGS, best_checkpoint as checkpoint, run_stage as run_cli


def assert_finite(metrics: dict[str, float], *names: str) -> None:
    for name in names:
        assert name in metrics, f"{name} not logged; have {sorted(metrics)[:20]}"
        assert math.isfinite(metrics[name]), f"{name} = {metrics[name]}"


FAST = ("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4")


def test_sft_test_rl_through_the_cli(tmp_path):
    sft_dir, rl_dir = tmp_path / "sft", tmp_path / "rl"
    sft_dir.mkdir(), rl_dir.mkdir()
    config = CONFIGS / "minionerec" / "synthetic_tiny.yaml"
    fit = run_cli("fit", config, sft_dir, *FAST)
    assert_finite(fit, "train/loss", "val/hr@5", "val/invalid_items", "train/param_drift")
    assert fit["train/param_drift"] > 0
    sft_ckpt = checkpoint(sft_dir)
    test = run_cli("test", config, sft_dir, "--ckpt_path", sft_ckpt)
    assert_finite(test, "test/hr@10", "test/ndcg@10", "test/hr@10_ci", "test/exact_hr@10", "test/exact_ndcg@20")
    assert test["test/invalid_items"] == 0.0
    # every test row was ranked both ways (beam search and exact scoring of all items)
    assert test["test/rows"] == test["test/exact_rows"] == 64
    rl = run_cli("fit", CONFIGS / "minionerec" / "synthetic_rl_tiny.yaml", rl_dir,
                 "--model.init_args.init_checkpoint", sft_ckpt)
    assert_finite(rl, "train/loss", "train/reward", "train/kl", "train/clip_frac", "train/param_drift")
    assert rl["train/param_drift"] > 0
    assert rl["train/kl"] >= 0.0


def test_rl_starts_from_the_sft_weights(tmp_path):
    data = synthetic_seqrec()
    small = dict(hidden_size=16, num_layers=1, num_heads=2)
    sft = LitMiniOneRec(sid_path="random-8x2", decoder=small)
    sft.build(data)
    ckpt = tmp_path / "sft.ckpt"
    torch.save({"state_dict": sft.state_dict()}, ckpt)
    rl = LitMiniOneRecRL(sid_path="random-8x2", decoder=small, init_checkpoint=str(ckpt))
    rl.build(data)
    for (name, a), b in zip(sft.state_dict().items(), rl.state_dict().values()):
        assert torch.equal(a, b), name
    # a checkpoint for another ID vocabulary is refused
    other = LitMiniOneRecRL(sid_path="random-16x2", decoder=small, init_checkpoint=str(ckpt))
    with pytest.raises(ValueError, match="does not match"):
        other.build(data)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="tasks must be"):
        LitMiniOneRec(tasks=("next_title",))
    with pytest.raises(ValueError, match="group_size"):
        LitMiniOneRecRL(rl=dict(group_size=1))
    with pytest.raises(FileNotFoundError, match="sid_path"):
        LitMiniOneRec(sid_path="/nonexistent/sid.json").build(synthetic_seqrec())


def test_lora_path_on_a_tiny_random_hf_model(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from vlkit.models.pretrained import smollm2_dir

    try:
        source = smollm2_dir()
    except FileNotFoundError as err:  # pragma: no cover - depends on the offline package
        pytest.skip(str(err))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(source) / name, tmp_path / name)
    config = LlamaConfig(vocab_size=49152, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    data = synthetic_seqrec()
    module = LitMiniOneRec(sid_path="random-8x2", decoder=dict(backbone=str(tmp_path), lora_r=4),
                           tasks=("sid_seq", "title2sid", "sid2title", "sid_seq2title", "title_seq2title", "title_seq2sid"))
    module.build(data)
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "trainable_tokens" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in module.model.parameters() if p.requires_grad], lr=1e-2)
    rows = module.train_rows(data)
    for step in range(2):
        loss = module.lm_loss(module.collate_train(rows[step * 8 : step * 8 + 8]))
        optimizer.zero_grad(), loss.backward(), optimizer.step()
    moved = {n for n, p in module.model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= trainable  # only LoRA / ID-token rows change
    batch = module.collate_eval(data.splits["test"][:3])
    items = module.recommend(batch["prompts"], 10)
    assert (items >= 0).all() and items.max() < len(data.item_ids)


def test_response_only_loss_equals_the_full_label_loss():
    # lm_loss computes logits for the last R + 1 positions only; it must equal HF's loss with -100 labels
    from recsys.models.constrained import position_ids_from_mask

    data = synthetic_seqrec()
    module = LitMiniOneRec(sid_path="random-8x2", decoder=dict(hidden_size=16, num_layers=1, num_heads=2),
                           tasks=("sid_seq", "title_seq2title", "sid2title"))
    module.build(data)
    rows = module.train_rows(data)
    batch = module.collate_train(rows[:3] + rows[-3:])  # mixed prompt and response lengths
    reference = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             position_ids=position_ids_from_mask(batch["attention_mask"]), labels=batch["labels"]).loss
    assert torch.allclose(module.lm_loss(batch), reference, atol=1e-5)
    # the one prompt template: SFT's next-ID prompt is the evaluation prompt
    sample = data.splits["train"][0]
    assert module.example("sid_seq", sample.history, sample.target)[0] == module.recommendation_prompt(sample.history)


def test_settings_groups_survive_a_weights_only_checkpoint_and_flat_ones_are_mapped(tmp_path):
    import dataclasses

    from recsys.methods.minionerec import (
        DecoderSettings,
        OptimizerSettings,
        RankingEvalSettings,
        grouped_hyperparameters,
    )

    module = LitMiniOneRec(sid_path="random-8x2", decoder=DecoderSettings(hidden_size=16, num_heads=2),
                           optimizer={"lr": 0.5}, evaluation={"ks": [5, 1]})
    # a dict overrides only the fields it names; a YAML list of cut-offs becomes a tuple
    assert module.optimizer_settings == OptimizerSettings(lr=0.5, weight_decay=0.01, warmup_steps=50)
    assert module.evaluation_settings.ks == (5, 1)
    path = tmp_path / "sft.ckpt"
    checkpoint = {"state_dict": {}, "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    saved = torch.load(path, weights_only=True)["hyper_parameters"]  # every group is a plain dict
    assert saved["decoder"] == dataclasses.asdict(module.decoder_settings)
    rebuilt = LitMiniOneRec(**saved)
    assert (rebuilt.decoder_settings, rebuilt.optimizer_settings, rebuilt.evaluation_settings) == (
        module.decoder_settings, module.optimizer_settings, module.evaluation_settings)
    # checkpoints written before the groups kept the fields flat: they are moved into their group
    flat = {"sid_path": "random-8x2", "hidden_size": 16, "num_heads": 2, "lr": 0.5, "ks": (5,), "group_size": 8}
    assert grouped_hyperparameters(flat) == {"sid_path": "random-8x2", "decoder": {"hidden_size": 16, "num_heads": 2},
                                             "optimizer": {"lr": 0.5}, "evaluation": {"ks": (5,)}, "rl": {"group_size": 8}}
    old = LitMiniOneRec(sid_path="random-8x2")
    old.on_load_checkpoint({"state_dict": {}, "hyper_parameters": flat})
    assert old.decoder_settings == DecoderSettings(hidden_size=16, num_heads=2)
    assert old.evaluation_settings == RankingEvalSettings(ks=(5,))
    assert old.hparams["optimizer"] == {"lr": 0.5, "weight_decay": 0.01, "warmup_steps": 50}
    # RL: the missing optimiser fields keep RL's defaults (no weight decay, 10 warm-up rollouts)
    old_rl = LitMiniOneRecRL(sid_path="random-8x2")
    old_rl.on_load_checkpoint({"state_dict": {}, "hyper_parameters": flat})
    assert old_rl.optimizer_settings == OptimizerSettings(lr=0.5, weight_decay=0.0, warmup_steps=10)
    assert old_rl.rl.group_size == 8 and old_rl.hparams["rl"]["group_size"] == 8
    # a checkpoint that already holds a group keeps it
    grouped = LitMiniOneRec(sid_path="random-8x2")
    grouped.on_load_checkpoint({"state_dict": {}, "hyper_parameters": {**saved, "lr": 9.0}})
    assert grouped.optimizer_settings == OptimizerSettings()
