"""vlkit.models.policy (the reference policy, sampling, the K-updates loop) and its two users' settings:
MiniOneRec RL's numbers before/after the policy core, its ``rl`` settings group in checkpoints, and the
transformers warm-up cosine schedule against the formula it replaced."""

import dataclasses
import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn

from vlkit.errors import ConfigError
from vlkit.functional.policy import completion_mask_after_eos
from vlkit.models.language import apply_lora, create_language_model
from vlkit.models.policy import (
    ReferencePolicy,
    decode_completions,
    manual_optimizer_step,
    policy_updates,
    sample_completions,
)


class _Affine(nn.Module):
    """y = w x + b, called with a keyword input like a Hugging Face model."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(2.0))
        self.b = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        return self.w * x + self.b


def test_frozen_copy_is_taken_at_the_first_reference_pass_and_stays():
    model = _Affine()
    model.b.requires_grad_(False)  # a frozen weight: not copied, shared with the policy
    reference = ReferencePolicy(use_disabled_adapter=False)
    assert reference.frozen is None  # lazily: nothing copied before the first pass
    with torch.no_grad():
        model.w.fill_(3.0)  # an update before the first reference pass is part of pi_ref
    with reference(model) as ref:
        assert ref(x=torch.tensor(1.0)).item() == 4.0  # 3 * 1 + 1
    assert list(reference.frozen) == ["w"]  # only the trainable tensors are copied
    with torch.no_grad():
        model.w.fill_(5.0)  # the policy moves on ...
        model.b.fill_(10.0)  # ... and a frozen (shared) weight change shows in both
    with reference(model) as ref:
        out = ref(x=torch.tensor(1.0))
    assert out.item() == 13.0 and not out.requires_grad  # 3 * 1 + 10, no graph
    assert model(x=torch.tensor(1.0)).item() == 15.0
    # a checkpoint round trip keeps the copy; reset() forgets it (the next pass copies w = 5)
    again = ReferencePolicy()
    again.load_state_dict(reference.state_dict())
    with again(model) as ref:
        assert ref(x=torch.tensor(1.0)).item() == 13.0
    again.reset()
    with again(model) as ref:
        assert ref(x=torch.tensor(1.0)).item() == 15.0


def test_disabled_adapter_is_the_base_model_and_trained_adapters_get_copied():
    torch.manual_seed(0)
    base = create_language_model("tiny-random-lm").model
    ids = torch.randint(5, 100, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = base(input_ids=ids).logits  # before LoRA wraps (and freezes) it
    model = apply_lora(base, r=2, alpha=4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # an adapter that was trained (e.g. by SFT): no longer the identity
                p.normal_(0, 0.5)
        policy = model(input_ids=ids).logits
    disabled = ReferencePolicy(use_disabled_adapter=True)
    with disabled(model) as ref:
        assert torch.allclose(ref(input_ids=ids).logits, expected, atol=1e-5)  # the base model, no copy
    assert disabled.frozen is None
    # with trained adapters the initial policy is base + adapter: copy the adapters only
    copied = ReferencePolicy(use_disabled_adapter=False)
    with copied(model) as ref:
        assert torch.allclose(ref(input_ids=ids).logits, policy, atol=1e-6)
    assert copied.frozen and all("lora_" in name for name in copied.frozen)
    assert not torch.allclose(policy, expected, atol=1e-3)
    with pytest.raises(ConfigError, match="peft model"):
        with ReferencePolicy(use_disabled_adapter=True)(_Affine()):
            pass


class _RecordingModule:
    """Stands in for a LightningModule under manual optimisation; records the calls."""

    def __init__(self):
        self.calls = []

    def manual_backward(self, loss):
        self.calls.append("backward")
        loss.backward()

    def clip_gradients(self, optimizer, gradient_clip_val, gradient_clip_algorithm):
        self.calls.append(f"clip {gradient_clip_val} {gradient_clip_algorithm}")


def test_k_updates_per_rollout_hand_values():
    # loss = w^2, SGD lr 0.1: grad 2w, w <- w - 0.2 w = 0.8 w; from w = 1: losses 1, 0.64, 0.4096
    w = nn.Parameter(torch.tensor(1.0))
    optimizer = torch.optim.SGD([w], lr=0.1)
    module = _RecordingModule()
    seen = []

    def loss_of_update(k):
        seen.append(k)
        return w**2, {"w": w.detach().clone()}

    stats = policy_updates(loss_of_update, manual_optimizer_step(module, optimizer, max_grad_norm=0.5), updates=3)
    assert seen == [0, 1, 2]
    assert [s["loss"].item() for s in stats] == pytest.approx([1.0, 0.64, 0.4096])
    assert [s["w"].item() for s in stats] == pytest.approx([1.0, 0.8, 0.64])  # each update's own forward
    assert w.item() == pytest.approx(0.512)
    assert module.calls == ["backward", "clip 0.5 norm"] * 3
    # no clipping asked: no clip call
    module.calls.clear()
    policy_updates(loss_of_update, manual_optimizer_step(module, optimizer, None), updates=1)
    assert module.calls == ["backward"]
    with pytest.raises(ConfigError, match="updates must be >= 1"):
        policy_updates(loss_of_update, lambda loss: None, updates=0)
    with pytest.raises(ConfigError, match="max_grad_norm must be > 0"):
        manual_optimizer_step(module, optimizer, 0.0)


def test_sample_completions_masks_after_eos_and_restores_the_training_mode():
    from transformers import GenerationConfig

    bundle = create_language_model("tiny-random-lm")
    tok = bundle.tokenizer
    inputs = dict(tok(["1+1=", "22+3="], return_tensors="pt", padding=True, add_special_tokens=False))
    bundle.model.train()
    config = GenerationConfig(do_sample=False, max_new_tokens=5, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id, return_dict_in_generate=True, output_logits=True)
    roll = sample_completions(bundle.model, inputs, config, tok.eos_token_id)
    assert bundle.model.training  # eval() only while generating
    P = inputs["input_ids"].shape[1]
    B, T = roll["completion_ids"].shape
    assert roll["prompt_length"] == P and B == 2 and 1 <= T <= 5
    assert torch.equal(roll["input_ids"][:, P:], roll["completion_ids"])
    assert torch.equal(roll["completion_mask"], completion_mask_after_eos(roll["completion_ids"], tok.eos_token_id))
    assert torch.equal(roll["attention_mask"], torch.cat([inputs["attention_mask"], roll["completion_mask"]], dim=1))
    assert roll["logits"].shape == (B, T, len(tok))
    # greedy: each sampled token is the argmax of its logits
    assert torch.equal(roll["logits"].argmax(-1)[roll["completion_mask"].bool()], roll["completion_ids"][roll["completion_mask"].bool()])
    texts = decode_completions(tok, roll["completion_ids"], roll["completion_mask"])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


# ---------------------------------------------------------------------------------------------------------
# MiniOneRec RL on the policy core


def _fit_minionerec_rl(K: int):
    from recsys.data.sequences import SeqRecDataModule
    from recsys.methods.minionerec import LitMiniOneRecRL

    L.seed_everything(0)
    module = LitMiniOneRecRL(sid_path="random-8x2", decoder=dict(hidden_size=16, num_layers=1, num_heads=2),
                             optimizer=dict(lr=0.01, warmup_steps=0), rl=dict(group_size=4, beta=0.1, updates_per_rollout=K))
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, SeqRecDataModule(dataset="synthetic", batch_size=16, eval_batch_size=16))
    weights_sq = sum(p.detach().double().pow(2).sum() for p in module.model.parameters()).item()
    return module, trainer, weights_sq


@pytest.mark.parametrize(
    "K, loss, kl, weights_sq",
    [
        # what the code before the policy core (a deepcopy reference, its own pi_old pass, log_softmax) gave
        # for this run; the log-probs are now logits[o] - logsumexp, equal up to float32 rounding
        (1, 0.0016568859573453665, 0.016568860039114952, 51.25520459454503),
        (2, -0.00249410979449749, 0.011304788291454315, 51.64497094278476),
    ],
)
def test_minionerec_rl_gives_the_numbers_of_before(K, loss, kl, weights_sq):
    module, trainer, got_sq = _fit_minionerec_rl(K)
    # K optimiser steps per rollout batch, and max_steps=3 counts optimiser steps: K = 2 stops after 2 rollouts
    assert trainer.global_step == {1: 3, 2: 4}[K]
    metrics = trainer.callback_metrics
    assert metrics["train/loss"].item() == pytest.approx(loss, rel=1e-4)
    assert metrics["train/kl"].item() == pytest.approx(kl, rel=1e-4)
    assert got_sq == pytest.approx(weights_sq, rel=1e-7)
    # full fine-tuning: the reference is a frozen copy of every trainable weight, not a second module
    assert set(module.reference.frozen) == {n for n, p in module.model.named_parameters() if p.requires_grad}


def test_minionerec_rl_settings_group_survives_a_weights_only_checkpoint(tmp_path):
    from recsys.methods.minionerec import LitMiniOneRecRL, RLSettings

    module = LitMiniOneRecRL(sid_path="random-8x2", rl=RLSettings(group_size=4, beta=0.5, updates_per_rollout=3))
    assert module.rl == RLSettings(group_size=4, beta=0.5, updates_per_rollout=3)
    path = tmp_path / "rl.ckpt"
    checkpoint = {"state_dict": {}, "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    loaded = torch.load(path, weights_only=True)  # the group is saved as a plain dict
    assert loaded["hyper_parameters"]["rl"] == dataclasses.asdict(module.rl)
    rebuilt = LitMiniOneRecRL(**{k: v for k, v in loaded["hyper_parameters"].items()})
    assert rebuilt.rl == module.rl
    # a checkpoint written before the group kept the fields flat: its settings are rebuilt from them
    old = LitMiniOneRecRL(sid_path="random-8x2")
    old.on_load_checkpoint({"state_dict": {}, "hyper_parameters": {"sid_path": "random-8x2", "group_size": 8,
                                                                    "clip_eps": 0.1, "updates_per_rollout": 1}})
    assert old.rl == RLSettings(group_size=8, clip_eps=0.1, updates_per_rollout=1)
    with pytest.raises(ConfigError, match="closest: group_size"):
        LitMiniOneRecRL(rl={"group_sise": 4})
    # LoRA adapters created for RL start as the identity (disabled adapter); from an SFT checkpoint they
    # are trained, so the reference copies them instead
    assert not LitMiniOneRecRL(sid_path="random-8x2").reference.use_disabled_adapter
    assert LitMiniOneRecRL(decoder=dict(backbone="x", lora_r=4)).reference.use_disabled_adapter
    assert not LitMiniOneRecRL(decoder=dict(backbone="x", lora_r=4), init_checkpoint="sft.ckpt").reference.use_disabled_adapter


@pytest.mark.parametrize("warmup_steps", [0, 4])
def test_minionerec_schedule_is_transformers_cosine_to_ten_percent(warmup_steps):
    from recsys.data.sequences import synthetic_seqrec
    from recsys.methods.minionerec import LitMiniOneRec

    module = LitMiniOneRec(sid_path="random-8x2", decoder=dict(hidden_size=16, num_layers=1, num_heads=2),
                           optimizer=dict(lr=1.0, warmup_steps=warmup_steps))
    module.build(synthetic_seqrec())
    total = 20
    module._trainer = SimpleNamespace(estimated_stepping_batches=total)
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(total):
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    w = warmup_steps

    def replaced(step):  # the hand-written schedule this replaced
        if step < w:
            return (step + 1) / w
        progress = (step - w) / max(1, total - w)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    # the cosine part is the same at every step; transformers' warm-up starts at 0, one step behind the
    # replaced one ((s + 1) / w): lr(s) = replaced(s - 1) for 0 < s < w, and lr(0) = 0
    for step in range(w, total):
        assert lrs[step] == pytest.approx(replaced(step), abs=1e-12)
    for step in range(1, w):
        assert lrs[step] == pytest.approx(replaced(step - 1), abs=1e-12)
    if w:
        assert lrs[0] == 0.0
    assert lrs[-1] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * (total - 1 - w) / (total - w))))
