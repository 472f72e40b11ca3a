"""LitARES / LitColdStartSFT: CLI smoke runs on tiny configs (text and multimodal), the LoRA reference
policy, log-prob consistency between generate() and the training forward, checkpointed controller state,
bad input, and the configs-parse check."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from vlkit.cli import main
from vlkit.functional.policy import completion_mask_after_eos, sampled_token_logprobs as _sequence_logprobs
from vlkit.methods.ares import LitARES
from vlkit.methods.ares_coldstart import LitColdStartSFT
from vlkit.models.language import char_tokenizer, create_language_model, ensure_pad_token, trigger_token_ids

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = sorted((ROOT / "configs" / "vlkit" / "ares").glob("*.yaml"))


def _fit(config: str, tmp_path: Path, *extra: str) -> dict:
    main([
        "fit", "--config", str(ROOT / config), "--trainer.default_root_dir", str(tmp_path),
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.save_dir={tmp_path}", *extra,
    ])  # fmt: skip
    ckpts = sorted(tmp_path.rglob("*.ckpt"))
    assert ckpts, "no checkpoint written"
    return torch.load(ckpts[-1], map_location="cpu", weights_only=True)


def _lora_b_moved(state_dict: dict) -> bool:
    # peft initialises every lora_B to zero: any non-zero entry means the adapters trained
    lora_b = [v for k, v in state_dict.items() if "lora_B" in k]
    assert lora_b, "no LoRA weights in the checkpoint"
    return any(bool(v.abs().sum() > 0) for v in lora_b)


def test_cli_fit_smoke_text_model(tmp_path, csv_metrics):
    ckpt = _fit("configs/vlkit/ares/arithmetic_tiny.yaml", tmp_path)
    metrics = csv_metrics(tmp_path)
    for key in ("train/reward", "train/entropy", "train/hwe_threshold", "train/kl_coef_easy", "train/length",
                "val/acc", "val/length", "val/hwe_count"):
        assert math.isfinite(metrics[key]), key
    # a random model over ~100 characters: entropy close to ln(|V|) = ln(105), and below it
    assert 3.0 < metrics["train/entropy"] <= math.log(105) + 1e-4
    assert 0.0 <= metrics["val/acc"] <= 1.0
    assert _lora_b_moved(ckpt["state_dict"])
    # the controller state travels in the checkpoint (and equals the buffers)
    ctrl = ckpt["ares_controller"]
    assert ctrl["controller_steps"] == 3 and ctrl["hwe_threshold"] > 0
    assert ctrl["kl_log_beta"] == pytest.approx(ckpt["state_dict"]["kl_log_beta"].tolist())
    # plots and history at the end of fit
    log_dir = next(tmp_path.rglob("ares_training.png")).parent
    history = json.loads((log_dir / "ares_history.json").read_text())["history"]
    assert len(history) == 3 and all(math.isfinite(h["train/reward"]) for h in history)


def test_cli_fit_smoke_multimodal_qwen2_vl(tmp_path, csv_metrics):
    ckpt = _fit("configs/vlkit/ares/arithmetic_tiny_vl.yaml", tmp_path)
    metrics = csv_metrics(tmp_path)
    assert math.isfinite(metrics["train/reward"]) and math.isfinite(metrics["val/acc"])
    assert _lora_b_moved(ckpt["state_dict"])


def test_cli_fit_cold_start_sft(tmp_path, csv_metrics):
    ckpt = _fit("configs/vlkit/ares/arithmetic_coldstart_tiny.yaml", tmp_path)
    metrics = csv_metrics(tmp_path)
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"])
    assert _lora_b_moved(ckpt["state_dict"])


@pytest.fixture(scope="module")
def tiny_module():
    torch.manual_seed(0)
    return LitARES(language_model=dict(model_name="tiny-random-lm", lora_r=4), group_size=2, max_new_tokens=6)


def test_reference_policy_is_the_disabled_adapter(tiny_module):
    module = tiny_module
    assert module.reference.use_disabled_adapter and module.reference.frozen is None  # no second copy with LoRA
    ids = torch.randint(5, 100, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    base = create_language_model("tiny-random-lm").model  # same seed -> same base weights
    with torch.no_grad():
        expected = base(input_ids=ids, attention_mask=mask).logits
        for name, p in module.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
        policy = module._forward_logits(ids, mask, {})
        with module.model.disable_adapter():
            reference = module._forward_logits(ids, mask, {})
        for name, p in module.model.named_parameters():
            if "lora_B" in name:
                p.zero_()
    assert torch.allclose(reference, expected, atol=1e-5)
    assert not torch.allclose(policy, expected, atol=1e-3)


def test_training_forward_matches_generation_logprobs(tiny_module):
    # left-padded prompts of different lengths: the training forward must use the same positions as
    # generate(), so the log-probs of the sampled tokens agree
    module = tiny_module
    torch.manual_seed(3)
    roll = module.generate(["What is 1 + 1?", "What is 12 + 30 please?"], group_size=2, temperature=1.0)
    P = roll["prompt_length"]
    logits = module._forward_logits(roll["input_ids"], roll["attention_mask"], roll["extra"])[:, P - 1 : -1]
    train_lp = _sequence_logprobs(logits, roll["completion_ids"])
    gen_lp = _sequence_logprobs(roll["logits"], roll["completion_ids"])
    m = roll["completion_mask"].bool()
    assert torch.allclose(train_lp[m], gen_lp[m], atol=1e-4)


def test_completion_mask_stops_after_first_eos():
    comp = torch.tensor([[5, 2, 9, 2], [5, 6, 7, 8], [2, 0, 0, 0]])
    assert completion_mask_after_eos(comp, 2).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_controller_state_survives_checkpoint_roundtrip():
    a = LitARES(language_model=dict(model_name="tiny-random-lm", lora_r=2), group_size=2, max_new_tokens=4)
    a.hwe_threshold.fill_(1.25)
    a.kl_log_beta.copy_(torch.tensor([0.1, -0.2, 0.3]))
    a.entropy_alpha.copy_(torch.tensor([0.4, 0.5, 0.6]))
    a.controller_steps.fill_(7)
    ckpt = {}
    a.on_save_checkpoint(ckpt)
    b = LitARES(language_model=dict(model_name="tiny-random-lm", lora_r=2), group_size=2, max_new_tokens=4)
    b.on_load_checkpoint(ckpt)
    assert b.controller_state() == a.controller_state()
    assert b.kl_beta.tolist() == pytest.approx(torch.tensor([0.1, -0.2, 0.3]).exp().tolist())


def test_bad_input_is_rejected_early():
    with pytest.raises(ValueError, match="group_size"):
        LitARES(group_size=1)
    with pytest.raises(ValueError, match="algorithm"):
        LitARES(algorithm="ppo")
    with pytest.raises(ValueError, match="token_selection"):
        LitARES(token_selection="random")
    with pytest.raises(ValueError, match="kl_target"):
        LitARES(kl_target=[0.01, 0.0, 0.01])
    with pytest.raises(TypeError, match="name"):
        create_language_model("")
    # a tokenizer without a pad token gets its EOS token, padding on the left
    tok = char_tokenizer()
    tok.pad_token = None
    ensure_pad_token(tok)
    assert tok.pad_token == tok.eos_token and tok.padding_side == "left"
    tok.eos_token = None
    tok.pad_token = None
    with pytest.raises(ValueError, match="pad token"):
        ensure_pad_token(tok)


def test_trigger_token_ids_are_first_tokens():
    tok = char_tokenizer()
    ids = trigger_token_ids(tok, ["wait", "so"])
    # character tokenizer: first tokens of "wait", " wait", "Wait", " Wait", "so", ... = w, ' ', W, s, S
    assert sorted(tok.convert_ids_to_tokens(ids.tolist())) == sorted([" ", "S", "W", "s", "w"])
    with pytest.raises(TypeError, match="list"):
        trigger_token_ids(tok, "wait")


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: vlkit.methods.ares." in printed or "class_path: vlkit.methods.ares_coldstart." in printed


def test_estimate_pass_rates_feeds_the_cold_start_builder(tiny_module):
    from vlkit.data.reasoning import build_adaptive_cold_start, generate_arithmetic_problems
    from vlkit.data.reasoning import estimate_pass_rates

    problems = generate_arithmetic_problems(3, levels=[1], seed=0)
    rates = estimate_pass_rates(tiny_module, problems, samples=2, batch_prompts=2)
    # one rate per problem, each a multiple of 1/samples (a random model is almost always wrong, but may
    # end on the right digit by chance)
    assert len(rates) == 3 and all(r in (0.0, 0.5, 1.0) for r in rates)
    examples = build_adaptive_cold_start(problems, rates, length_at_0=30, length_at_1=2)
    # L_target(p) = (1 - p) 30 + p 2
    assert [e.target_length for e in examples] == [30 - 28 * r for r in rates]


def _fit_two_rollouts(tmp_path, lora_r, **overrides):
    import lightning as L

    from vlkit.data.reasoning import ReasoningDataModule

    L.seed_everything(0)
    module = LitARES(language_model=dict(model_name="tiny-random-lm", lora_r=lora_r), group_size=2, max_new_tokens=6,
                     learning_rate=0.01, filter_groups=False, kl_coef=0.5, max_grad_norm=1.0, plot_dir=str(tmp_path),
                     **overrides)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=2 * module.hparams.updates_per_rollout, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(module, ReasoningDataModule(train_size=4, val_size=2, test_size=2, levels=[1, 2], prompts_per_batch=2))
    trainable = [p.detach().double() for p in module.model.parameters() if p.requires_grad]
    return module, trainer, sum(p.pow(2).sum() for p in trainable).item()


@pytest.mark.parametrize(
    "lora_r, weights_sq, kl, kl_log_beta_hard",
    [
        # what the code before the policy core gave for this run (automatic optimisation with
        # trainer.gradient_clip_val=1.0, the reference a disabled adapter / a deepcopy submodule): two
        # rollout batches, one update each
        (4, 20.014121297949877, 0.009888753294944763, -0.00013280050188768655),
        (0, 372.80280837319174, 0.05259836092591286, 5.93928198213689e-05),
    ],
)
def test_one_update_per_rollout_gives_the_numbers_of_before(tmp_path, lora_r, weights_sq, kl, kl_log_beta_hard):
    module, trainer, got_sq = _fit_two_rollouts(tmp_path, lora_r=lora_r)
    assert trainer.global_step == 2 and int(module.controller_steps) == 2
    assert got_sq == pytest.approx(weights_sq, rel=1e-6)
    assert trainer.callback_metrics["train/kl"].item() == pytest.approx(kl, rel=1e-5)
    assert module.kl_log_beta[2].item() == pytest.approx(kl_log_beta_hard, rel=1e-4)
    # LoRA: no copy at all; full fine-tuning: a frozen copy of the weights, taken at the first step
    assert (module.reference.frozen is None) == (lora_r > 0)
    # the history callback the module brings wrote one row per rollout batch
    history = json.loads((tmp_path / "ares_history.json").read_text())["history"]
    assert [row["step"] for row in history] == [1, 2] and (tmp_path / "ares_training.png").exists()


def test_several_updates_per_rollout(tmp_path):
    module, trainer, got_sq = _fit_two_rollouts(tmp_path, lora_r=4, updates_per_rollout=2)
    # 2 rollout batches x 2 optimiser updates; the controller steps once per rollout
    assert trainer.global_step == 4 and int(module.controller_steps) == 2
    # the second update of each rollout moved the weights beyond where one update per rollout leaves them
    assert got_sq != pytest.approx(20.014121297949877, rel=1e-6)
    assert math.isfinite(trainer.callback_metrics["train/clip_frac"].item())  # the last update's statistics
    history = json.loads((tmp_path / "ares_history.json").read_text())["history"]
    assert [row["step"] for row in history] == [2, 4]


def test_checkpoints_keep_the_frozen_reference_and_old_ones_load(tmp_path):
    module = LitARES(language_model=dict(model_name="tiny-random-lm", lora_r=0), group_size=2, max_new_tokens=4)
    ids = torch.randint(5, 100, (1, 6), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    with module.reference(module.model) as ref:  # the first reference pass copies the weights
        before = module._forward_logits(ids, mask, {}, model=ref)
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    assert set(ckpt["ares_reference_policy"]) == set(module.reference.frozen)
    # a checkpoint of the code before the policy core held the frozen copy as a submodule, ref_model.*
    old = {"state_dict": {**module.state_dict(), **{f"ref_model.{k}": v for k, v in module.model.state_dict().items()}}}
    fresh = LitARES(language_model=dict(model_name="tiny-random-lm", lora_r=0), group_size=2, max_new_tokens=4,
                    seed=1)  # other weights
    fresh.on_load_checkpoint(old)
    fresh.load_state_dict(old["state_dict"])  # strict: the ref_model.* keys were taken out
    with fresh.reference(fresh.model) as ref:
        assert torch.allclose(fresh._forward_logits(ids, mask, {}, model=ref), before)


def test_cold_start_checkpoints_from_before_the_split_still_load(tmp_path):
    from vlkit.checkpoints import load_checkpoint

    # LitColdStartSFT lived in vlkit.methods.ares; a checkpoint recorded that path
    path = tmp_path / "sft.ckpt"
    torch.save({"state_dict": {}, "vlkit_class": "vlkit.methods.ares.LitColdStartSFT"}, path)
    assert load_checkpoint(path, LitColdStartSFT)["vlkit_class"] == "vlkit.methods.ares.LitColdStartSFT"
    with pytest.raises(ValueError, match="is a LitColdStartSFT checkpoint; expected a LitARES checkpoint"):
        load_checkpoint(path, LitARES)


@pytest.mark.parametrize("cls", [LitARES, LitColdStartSFT], ids=lambda c: c.__name__)
def test_language_model_group_round_trips_and_flat_checkpoints_load(cls, reload_with_flat_group):
    from vlkit.models.language import LanguageModelSettings

    chosen = LanguageModelSettings(model_name="tiny-random-lm", lora_r=2, lora_alpha=4)
    module = cls(language_model=dict(model_name="tiny-random-lm", lora_r=2, lora_alpha=4))
    assert module.language_model == chosen
    assert module.hparams.language_model == dataclasses.asdict(chosen)  # plain values: loads with weights_only
    for loaded in reload_with_flat_group(module, "language_model"):
        # rank 2 again (not the default 16, whose adapters' shapes would not load), the same weights
        assert loaded.language_model == chosen
        assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in module.state_dict().items())
