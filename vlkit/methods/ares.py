"""ARES: difficulty-aware entropy shaping for RL with verifiable rewards (arXiv 2510.08457).

``LitARES`` post-trains a Hugging Face causal LM or vision-language model (Qwen2-VL style processor)
with group-sampled rollouts from ``transformers`` ``generate``, verifiable rewards (the answer verifier
``vlkit.data.verifier``), and the AEPO objective (``vlkit.functional.aepo``) or plain GRPO. Every equation
lives in ``vlkit.functional.entropy`` / ``aepo`` / ``policy``; sampling, the reference policy and the
update loop are the policy core of ``vlkit.models.policy`` (shared with MiniOneRec RL); this module
orchestrates and logs. The cold-start SFT before RL is ``vlkit.methods.ares_coldstart.LitColdStartSFT``.

One training step (one rollout batch, ``updates_per_rollout`` optimiser updates: 1 by default, so the
importance ratio is 1 at the update; the authors take 4 updates per rollout batch, see docs/papers.md
(ARES section)):
 1. sample G completions per prompt; 2. score them (accuracy in {0, 1});
 3. one forward pass: log-probs of the sampled tokens and the exact full-vocabulary entropy;
 4. window entropy, per-response 95th percentile, global threshold tau (decayed median), HWE tokens;
 5. difficulty bucket per group from its pass rate, per-bucket HWE targets and alpha (all-reduced);
 6. reward = accuracy (GRPO) or accuracy + hierarchical entropy reward (AEPO), computed *after* 5;
 7. GRPO advantages; groups with pass rate 0 or 1 masked out (filter on accuracy, optional);
 8. loss = clipped surrogate + kl_coef * beta_bucket * k3 KL to the reference (LoRA disabled);
 9. per-bucket KL controller step on all-reduced statistics (identical on every rank, checkpointed);
 10. updates 2..K reuse the rollout (advantages, reference log-probs, pi_old = the log-probs of update 1).

The training signals are logged (``train/reward``, ``train/entropy``, ...); the module's
``configure_callbacks`` adds a ``vlkit.callbacks.MetricHistory`` that draws them into ``ares_training.png``
and writes ``ares_history.json`` at the end of ``fit``.
"""

from __future__ import annotations

import dataclasses

import lightning as L
import torch
from torch import Tensor

from vlkit.callbacks import MetricHistory
from vlkit.checkpoints import record_class, regrouped_hyperparameters
from vlkit.data.verifier import check_answer
from vlkit.errors import (
    ConfigError,
    check_choice,
    check_int,
    check_non_negative,
    check_number,
    check_positive,
    check_probability,
    check_settings,
)
from vlkit.functional.aepo import TOKEN_SELECTIONS, accuracy_group_mask, aepo_loss, shaped_rewards
from vlkit.functional.entropy import (
    BUCKET_NAMES,
    DEFAULT_CHUNK_TOKENS,
    bucket_mean,
    bucket_targets,
    difficulty_buckets,
    hwe_token_mask,
    response_entropy_threshold,
    token_entropy,
    update_entropy_alpha,
    update_hwe_threshold,
    update_kl_controller,
    window_entropy,
)
from vlkit.functional.policy import (
    group_advantages,
    kl_penalty,
    position_ids_from_mask,
    sampled_token_logprobs,
    sampled_token_logprobs_and_entropy,
)
from vlkit.models.language import (
    DEFAULT_TRIGGER_WORDS,
    LanguageModelBundle,
    LanguageModelSettings,
    check_same_batch_count,
    data_parallel_mesh,
    encode_chat_prompts,
    shard_language_model,
    trigger_token_ids,
    vision_token_ids,
)
from vlkit.models.metrics import GroupedSums
from vlkit.models.policy import (
    ReferencePolicy,
    decode_completions,
    manual_optimizer_step,
    policy_updates,
    sample_completions,
)

__all__ = ["LitARES", "TRAINING_PANELS"]

ALGORITHMS = ("aepo", "grpo")
KL_ESTIMATORS = ("k1", "k2", "k3")
_CONTROLLER_KEYS = ("hwe_threshold", "hwe_targets", "entropy_alpha", "kl_ema", "kl_error_ema", "kl_log_beta", "controller_steps")

# the six panels of ares_training.png: title -> logged keys (vlkit.callbacks.MetricHistory)
TRAINING_PANELS = {
    "reward / accuracy": ["train/reward", "train/accuracy"],
    "token entropy": ["train/entropy", "train/hwe_threshold"],
    "HWE tokens per response": [f"train/hwe_count_{b}" for b in BUCKET_NAMES],
    "KL coefficient": [f"train/kl_coef_{b}" for b in BUCKET_NAMES],
    "response length": [f"train/length_{b}" for b in BUCKET_NAMES],
    "KL to reference": ["train/kl"],
}
_SCALAR_KEYS = ["train/reward", "train/accuracy", "train/entropy", "train/hwe_threshold", "train/hwe_count",
                "train/length", "train/kept_groups", "train/loss_pg", "train/kl", "train/clip_frac",
                "train/selected_frac"]
_BUCKET_KEYS = ["kl_coef", "alpha", "hwe_target", "frac", "hwe_count", "length"]
# every key _log_train logs, in its order: what the history records
TRAINING_METRICS = _SCALAR_KEYS + [f"train/{key}_{b}" for key in _BUCKET_KEYS for b in BUCKET_NAMES]


class LitARES(L.LightningModule):
    """RL post-training with ARES' AEPO (difficulty-aware entropy shaping) or plain GRPO.

    Args:
        language_model: the policy model and its LoRA adapters
            (:class:`~vlkit.models.language.LanguageModelSettings`: ``model_name``, ``dtype``, ``lora_r``,
            ``lora_alpha``, ``lora_dropout``, ``lora_target_modules``; a dict of some of them also works).
            ``lora_r`` 0 trains all weights and keeps a frozen copy as the reference policy; with LoRA the
            reference is the model with its adapters disabled (no copy).
        algorithm: ``"aepo"`` (accuracy + hierarchical entropy reward) or ``"grpo"`` (accuracy only).
        group_size: G samples per prompt (authors: 8); an int >= 2.
        max_new_tokens: completion budget per sample, an int >= 1.
        temperature: rollout sampling temperature, > 0 (authors: 1.0).
        top_p: rollout nucleus sampling, in (0, 1] (authors: 0.99).
        eval_temperature: validation/test sampling temperature, >= 0 (authors: 0.5); 0 means greedy.
        learning_rate: AdamW learning rate, > 0 (authors: 1e-6 for full fine-tuning).
        weight_decay: AdamW weight decay, >= 0 (authors: 1e-2).
        max_grad_norm: clip the gradients' global L2 norm to this, > 0, or None for no clipping (authors:
            1.0). Set here, not as ``trainer.gradient_clip_val``: the updates use manual optimisation.
        updates_per_rollout: K, optimiser updates on each rollout batch, an int >= 1 (1: on-policy, the
            importance ratio is 1; authors: 4 mini-batch updates per rollout batch).
        clip_low: PPO clip epsilon below 1, in [0, 1) (authors: 0.2).
        clip_high: PPO clip epsilon above 1 (clip-higher), >= 0, or None for ``clip_low`` (authors: 0.3).
        dual_clip: dual-clip cap c > 1 for negative advantages, or None (authors: 3.0).
        kl_coef: base KL coefficient, >= 0 (authors: 1e-2); 0 disables the reference pass.
        kl_estimator: ``k1``, ``k2`` or ``k3`` (authors: k3, "low_var_kl").
        dynamic_kl: per-bucket beta controller (authors: on); off means a constant kl_coef.
        kl_target: KL target per bucket (easy, medium, hard), 3 values > 0 (authors: 0.01 each).
        kl_update_interval: optimiser steps between beta updates, an int >= 1 (see docs: authors' 100
            micro-batches ~ 1 step).
        entropy_window: w, tokens in the window, an int >= 1 (authors: 4).
        window_includes_current: False = tokens t+1..t+w (authors' code), True = t..t+w-1 (paper).
        threshold_quantile: per-response percentile of window entropy, in [0, 1] (authors: 0.95).
        threshold_decay: tau <- decay tau + (1 - decay) median, decay in [0, 1] (authors: 0.99).
        trigger_words: restrict HWE tokens to these words' first tokens (authors: a 174-word list);
            ``None`` counts every high window-entropy token (the paper's definition); ``["default"]``
            uses ``vlkit.models.language.DEFAULT_TRIGGER_WORDS``.
        alpha_init: initial entropy-reward scale alpha of every bucket, in [0, 2] (the range alpha is
            clipped to; authors: 0.5).
        alpha_step: alpha's update step, >= 0 (authors: 0.05).
        filter_groups: mask groups whose pass rate is 0 or 1 (DAPO dynamic sampling, on accuracy).
        token_selection: ``all``, ``top_entropy`` (80/20), ``clip_cov`` or ``kl_cov``.
        top_entropy_rho: fraction of tokens kept by ``top_entropy``, in (0, 1] (0.2).
        entropy_chunk_size: tokens per chunk of the log-softmax pass that gives the sampled tokens' log-probs
            and the full-vocabulary entropy together, an int >= 1; its extra memory is one float32
            (entropy_chunk_size, V) buffer (32: 6 MB at V = 49,152).
        system_prompt: optional system message.
        plot_dir: where the ``MetricHistory`` callback writes ``ares_training.png`` and ``ares_history.json``
            at the end of fit (default: the trainer's log directory).
        seed: initialisation seed of random tiny presets.
    """

    def __init__(
        self,
        language_model: LanguageModelSettings = LanguageModelSettings(),
        algorithm: str = "aepo",
        group_size: int = 8,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 0.99,
        eval_temperature: float = 0.5,
        learning_rate: float = 1e-6,
        weight_decay: float = 1e-2,
        max_grad_norm: float | None = None,
        updates_per_rollout: int = 1,
        clip_low: float = 0.2,
        clip_high: float | None = 0.3,
        dual_clip: float | None = 3.0,
        kl_coef: float = 1e-2,
        kl_estimator: str = "k3",
        dynamic_kl: bool = True,
        kl_target: list[float] = [0.01, 0.01, 0.01],
        kl_update_interval: int = 1,
        entropy_window: int = 4,
        window_includes_current: bool = False,
        threshold_quantile: float = 0.95,
        threshold_decay: float = 0.99,
        trigger_words: list[str] | None = None,
        alpha_init: float = 0.5,
        alpha_step: float = 0.05,
        filter_groups: bool = True,
        token_selection: str = "all",
        top_entropy_rho: float = 0.2,
        entropy_chunk_size: int = DEFAULT_CHUNK_TOKENS,
        system_prompt: str | None = None,
        plot_dir: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.language_model = check_settings("language_model", language_model, LanguageModelSettings)
        check_positive("learning_rate", learning_rate)
        check_non_negative("weight_decay", weight_decay)
        check_positive("max_grad_norm", max_grad_norm, allow_none=True)
        check_int("updates_per_rollout", updates_per_rollout, low=1)
        check_choice("algorithm", algorithm, ALGORITHMS)
        check_int("group_size", group_size, low=2)  # advantages are relative to the group
        check_choice("token_selection", token_selection, TOKEN_SELECTIONS)
        check_int("max_new_tokens", max_new_tokens, low=1)
        check_positive("temperature", temperature)
        check_probability("top_p", top_p, open_low=True)
        check_non_negative("eval_temperature", eval_temperature)
        check_probability("clip_low", clip_low, open_high=True)
        check_non_negative("clip_high", clip_high, allow_none=True)
        check_number("dual_clip", dual_clip, low=1, low_open=True, allow_none=True)
        check_non_negative("kl_coef", kl_coef)
        check_choice("kl_estimator", kl_estimator, KL_ESTIMATORS)
        if isinstance(kl_target, (str, int, float)) or len(kl_target) != 3:
            raise ConfigError(
                f"kl_target must be 3 positive values (easy, medium, hard), got {kl_target!r}", argument="kl_target"
            )
        for target in kl_target:
            check_positive("kl_target", target)
        check_int("kl_update_interval", kl_update_interval, low=1)
        check_int("entropy_window", entropy_window, low=1)
        check_probability("threshold_quantile", threshold_quantile)
        check_probability("threshold_decay", threshold_decay)
        if trigger_words is not None and (
            isinstance(trigger_words, str) or not trigger_words or not all(isinstance(w, str) and w for w in trigger_words)
        ):
            raise ConfigError(
                f"trigger_words must be None, ['default'] or a non-empty list of words, got {trigger_words!r}",
                argument="trigger_words",
            )
        check_number("alpha_init", alpha_init, low=0, high=2)
        check_non_negative("alpha_step", alpha_step)
        check_probability("top_entropy_rho", top_entropy_rho, open_low=True)
        check_int("entropy_chunk_size", entropy_chunk_size, low=1)
        check_int("seed", seed)
        language_model = dataclasses.asdict(self.language_model)  # hparams hold plain values (weights_only loads)
        self.save_hyperparameters()
        self.system_prompt = system_prompt
        self.automatic_optimization = False  # K updates per rollout (vlkit.models.policy.policy_updates)
        self._bundle = None  # the model and its tokenizer: built by configure_model (sharded under FSDP)
        # fresh adapters are the identity: the disabled adapter is the initial policy; else a frozen copy,
        # taken at the first reference pass (none at all when kl_coef = 0)
        self.reference = ReferencePolicy(use_disabled_adapter=self.language_model.lora_r > 0)
        # controller state: buffers (so they follow the device and sit in state_dict) + on_save_checkpoint
        self.register_buffer("hwe_threshold", torch.tensor(-1.0))  # tau, -1 = not set yet
        self.register_buffer("hwe_targets", torch.zeros(3))  # per bucket
        self.register_buffer("entropy_alpha", torch.full((3,), float(alpha_init)))
        self.register_buffer("kl_ema", torch.tensor(kl_target, dtype=torch.float32))  # starts at target: e = 0
        self.register_buffer("kl_error_ema", torch.zeros(3))
        self.register_buffer("kl_log_beta", torch.zeros(3))  # beta = 1
        self.register_buffer("controller_steps", torch.tensor(0, dtype=torch.long))
        self._trigger_ids: Tensor | None = None
        # per generator level (6): count, correct, length, HWE tokens of the evaluated prompts, summed over ranks
        # at compute (a torchmetrics "sum" state): N ranks report what 1 rank reports
        self.eval_sums = torch.nn.ModuleDict({stage: GroupedSums(6, 4) for stage in ("val", "test")})

    # ------------------------------------------------------------------ the model
    def configure_model(self) -> None:
        """Build the policy model and its tokenizer, once. Lightning calls this hook before fit, validate and
        test; outside a Trainer, reading ``model`` or ``bundle`` calls it.

        Under Lightning's ``ModelParallelStrategy`` the model is sharded with FSDP2 as it is built: every rank
        builds it on the meta device, shards it, then fills its shards from rank 0's CPU build, so no rank holds
        the full weights on its device (:func:`vlkit.models.language.shard_language_model`). The KL reference is
        then the same sharded model with its LoRA adapters disabled; full fine-tuning with a KL term is refused
        there (its frozen copy is swapped in by ``torch.func.functional_call``, which sharded parameters do
        not allow)."""
        if "model" in self._modules:
            return
        seed = self.hparams.seed
        mesh = data_parallel_mesh(self._device_mesh)
        if mesh is None:
            bundle = self.language_model.create(seed)
        else:
            if self.language_model.lora_r == 0 and self.hparams.kl_coef > 0:
                raise ConfigError(
                    "a sharded strategy (FSDP) needs LoRA for ARES' KL reference (the disabled adapter); full "
                    f"fine-tuning's frozen copy cannot run sharded: set language_model.lora_r > 0 or kl_coef 0, got "
                    f"lora_r 0 and kl_coef {self.hparams.kl_coef}", argument="language_model.lora_r")
            bundle = self.language_model.create(seed, empty=True)
            shard_language_model(bundle.model, mesh, self.trainer.strategy.root_device,
                                 lambda: self.language_model.create(seed).model)
        if self._trainer is None:  # a notebook's module may have been moved before its build: follow it
            bundle.model.to(self.device)
        self._bundle = bundle
        self.model = bundle.model

    def state_dict(self, *args, **kwargs):
        """``nn.Module.state_dict``, the model built first (:meth:`configure_model`): its weights are part of it."""
        self.configure_model()
        return super().state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``, the model built first (:meth:`configure_model`) to receive its weights."""
        self.configure_model()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @property
    def bundle(self) -> LanguageModelBundle:
        """The policy model with its tokenizer (and processor), built on first use (:meth:`configure_model`)."""
        if self._bundle is None:
            self.configure_model()
        return self._bundle

    @bundle.setter
    def bundle(self, bundle: LanguageModelBundle) -> None:
        self._bundle = bundle

    @property
    def model(self) -> torch.nn.Module:
        """The policy model (a peft model under LoRA), built on first use (:meth:`configure_model`)."""
        if "model" not in self._modules:
            self.configure_model()
        return self._modules["model"]

    # ------------------------------------------------------------------ helpers
    @property
    def kl_beta(self) -> Tensor:
        """(3,) the per-bucket KL multipliers beta = exp(log beta) of the controller."""
        return self.kl_log_beta.exp()

    def _world_sum(self, t: Tensor) -> Tensor:
        """``t`` summed over all ranks (itself on one process)."""
        if self._trainer is not None and self._trainer.world_size > 1:
            return self.trainer.strategy.reduce(t.clone(), reduce_op="sum")
        return t

    def _world_cat(self, t: Tensor) -> Tensor:
        """(B,) ``t`` of every rank, concatenated: (world * B,) (itself on one process)."""
        if self._trainer is not None and self._trainer.world_size > 1:
            return self.all_gather(t).reshape(-1)  # (world * B,)
        return t

    def trigger_ids(self) -> Tensor | None:
        """(K,) token ids that may open an HWE token (the trigger words' first tokens), or None for all."""
        words = self.hparams.trigger_words
        if words is None:
            return None
        if self._trigger_ids is None:
            words = list(DEFAULT_TRIGGER_WORDS) if list(words) == ["default"] else list(words)
            self._trigger_ids = trigger_token_ids(self.bundle.tokenizer, words)
        return self._trigger_ids.to(self.device)

    def controller_state(self) -> dict[str, list | float | int]:
        """The ARES controller state (tau, targets, alpha, KL EMA/error/log-beta, steps) as plain Python."""
        return {k: getattr(self, k).detach().cpu().tolist() for k in _CONTROLLER_KEYS}

    @torch.no_grad()
    def generate(self, prompts: list[str], images: list | None = None, group_size: int = 1,
                 temperature: float | None = None, max_new_tokens: int | None = None) -> dict[str, Tensor]:
        """Sample ``group_size`` completions per prompt (groups contiguous).

        Returns a dict: ``input_ids`` (B, P + T) prompt + completion, ``attention_mask`` (B, P + T),
        ``completion_ids`` (B, T), ``completion_mask`` (B, T) (1 up to and including EOS), ``prompt_length``
        P, ``extra`` (pixel values etc. for the forward pass), ``logits`` (B, T, V) raw generation logits.
        """
        from transformers import GenerationConfig

        hp = self.hparams
        if isinstance(prompts, str) or not prompts:
            raise ConfigError(f"prompts must be a non-empty list of strings, got {prompts!r}"[:200], argument="prompts")
        if images is not None and len(images) != len(prompts):
            raise ConfigError(f"images must hold one image per prompt ({len(prompts)}), got {len(images)}", argument="images")
        check_int("group_size", group_size, low=1)
        check_non_negative("temperature", temperature, allow_none=True)
        check_int("max_new_tokens", max_new_tokens, low=1, allow_none=True)  # 0 must not fall back to the default
        rep_prompts = [p for p in prompts for _ in range(group_size)]
        rep_images = None if images is None else [im for im in images for _ in range(group_size)]
        enc = encode_chat_prompts(self.bundle, rep_prompts, rep_images, self.system_prompt)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        temperature = hp.temperature if temperature is None else temperature
        tok = self.bundle.tokenizer
        gen_cfg = GenerationConfig(
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=hp.top_p if temperature > 0 else None,
            top_k=0 if temperature > 0 else None,  # authors: top_p only (vLLM top_k = -1)
            max_new_tokens=hp.max_new_tokens if max_new_tokens is None else max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            suppress_tokens=vision_token_ids(self.bundle),
            return_dict_in_generate=True,
            output_logits=True,
        )
        return sample_completions(self.model, enc, gen_cfg, tok.eos_token_id)

    def sample_texts(self, prompts: list[str], samples: int = 1) -> list[str]:
        """``samples`` completion texts per prompt at the rollout temperature, grouped by prompt (the policy
        interface of ``vlkit.data.reasoning.estimate_pass_rates``)."""
        roll = self.generate(prompts, None, group_size=samples)
        return decode_completions(self.bundle.tokenizer, roll["completion_ids"], roll["completion_mask"])

    @staticmethod
    def _score(texts: list[str], answers: list[str], answer_types: list[str]) -> Tensor:
        """(B,) accuracy rewards in {0, 1} from the answer verifier."""
        return torch.tensor([check_answer(t, a, k) for t, a, k in zip(texts, answers, answer_types)])

    def _forward_logits(self, input_ids: Tensor, attention_mask: Tensor, extra: dict[str, Tensor], model=None) -> Tensor:
        """Logits (B, L, V) of a full (prompt + completion) batch under ``model`` (default: the policy; the
        reference callable of ``self.reference``), positions following the left padding."""
        model = self.model if model is None else model
        kwargs = dict(extra)
        if not self.bundle.is_multimodal:  # M-RoPE models compute their own positions
            kwargs["position_ids"] = position_ids_from_mask(attention_mask)  # (B, L), as generate() numbers them
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs).logits

    def _hwe(self, entropy: Tensor, mask: Tensor, token_ids: Tensor, update_threshold: bool) -> Tensor:
        """(B, T) HWE mask; updates tau from this batch first when ``update_threshold`` (training)."""
        hp = self.hparams
        win = window_entropy(entropy, mask, hp.entropy_window, hp.window_includes_current)  # (B, T)
        if update_threshold:
            tau_resp = response_entropy_threshold(win, mask, hp.threshold_quantile)  # (B,)
            tau_all = self._world_cat(tau_resp)  # (world * B,) same on every rank
            self.hwe_threshold.copy_(update_hwe_threshold(self.hwe_threshold, tau_all, hp.threshold_decay))
        return hwe_token_mask(win, mask, self.hwe_threshold, token_ids, self.trigger_ids())

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        """One rollout batch: sample G completions per prompt, score them, then ``updates_per_rollout``
        optimiser updates on the AEPO / GRPO loss (manual optimisation); logs the training signals."""
        G = self.hparams.group_size
        if not batch["prompt"]:
            raise ConfigError("batch['prompt'] must hold at least one prompt, got an empty batch", argument="batch")
        roll = self.generate(batch["prompt"], batch.get("image"), group_size=G)
        texts = decode_completions(self.bundle.tokenizer, roll["completion_ids"], roll["completion_mask"])
        answers = [a for a in batch["answer"] for _ in range(G)]
        kinds = [k for k in batch["answer_type"] for _ in range(G)]
        correct = self._score(texts, answers, kinds).to(self.device)  # (B,), B = prompts * G
        rollout: dict = {}

        def loss_of_update(k: int) -> tuple[Tensor, dict[str, Tensor]]:
            loss = self.rollout_loss(roll, correct, rollout)
            return loss, rollout["stats"]

        step = manual_optimizer_step(self, self.optimizers(), self.hparams.max_grad_norm)
        updates = policy_updates(loss_of_update, step, self.hparams.updates_per_rollout)
        self._log_train(rollout, updates[-1])
        return updates[-1]["loss"]

    def rollout_loss(self, roll: dict, correct: Tensor, rollout: dict | None = None) -> Tensor:
        """The policy loss of one update on a scored rollout batch (``generate`` output and (B,) accuracy
        rewards). Split from ``training_step`` so it can be timed alone (``bench/ares.py``).

        The first call on a rollout (``rollout`` None or an empty dict) does the once-per-rollout work with
        the forward pass of the rollout policy: pi_old (its detached log-probs), the exact entropy, the
        reference pass, the HWE threshold, difficulty buckets, rewards, advantages and the KL-controller
        step, kept in ``rollout``; later calls (updates 2..K) reuse them with a fresh forward pass. The
        update's statistics land in ``rollout["stats"]``.
        """
        hp = self.hparams
        rollout = {} if rollout is None else rollout
        P = roll["prompt_length"]
        logits = self._forward_logits(roll["input_ids"], roll["attention_mask"], roll["extra"])[:, P - 1 : -1]  # (B, T, V)
        if not rollout:  # one chunked pass: log-probs (with grad) and the exact entropy (no grad), (B, T) each
            logprobs, rollout["entropy"] = sampled_token_logprobs_and_entropy(
                logits, roll["completion_ids"], hp.entropy_chunk_size
            )
            del logits
            self._prepare_rollout(roll, correct, logprobs.detach(), rollout)
        else:
            logprobs = sampled_token_logprobs(logits, roll["completion_ids"], hp.entropy_chunk_size)  # (B, T) with grad
            del logits
        loss, stats = aepo_loss(
            logprobs, rollout["old_logprobs"], rollout["advantages"], rollout["loss_mask"], rollout["ref_logprobs"],
            rollout["kl_coef_seq"], clip_low=hp.clip_low, clip_high=hp.clip_high, dual_clip=hp.dual_clip,
            kl_estimator=hp.kl_estimator, token_selection=hp.token_selection, entropy=rollout["entropy"],
            top_entropy_rho=hp.top_entropy_rho,
        )
        if rollout["kl"] is not None:  # log the KL of every sampled token, as the controller sees it
            stats["kl"] = rollout["kl"]
        rollout["stats"] = stats
        return loss

    @torch.no_grad()
    def _prepare_rollout(self, roll: dict, correct: Tensor, old_logprobs: Tensor, rollout: dict) -> None:
        """The once-per-rollout signals (into ``rollout``) and controller updates, from the rollout policy's
        (B, T) log-probs ``old_logprobs`` and ``rollout["entropy"]``."""
        hp = self.hparams
        G = hp.group_size
        mask = roll["completion_mask"]  # (B, T)
        P = roll["prompt_length"]
        entropy = rollout["entropy"]  # (B, T)
        ref_logprobs = None
        if hp.kl_coef > 0:
            with self.reference(self.model) as reference:
                ref_logits = self._forward_logits(roll["input_ids"], roll["attention_mask"], roll["extra"], model=reference)
                ref_logprobs = sampled_token_logprobs(
                    ref_logits[:, P - 1 : -1], roll["completion_ids"], hp.entropy_chunk_size
                )  # (B, T)
                del ref_logits

        # entropy signals and difficulty, all before any reward is computed (the authors' ordering bug)
        hwe = self._hwe(entropy, mask, roll["completion_ids"], update_threshold=True)  # (B, T)
        hwe_counts = hwe.sum(dim=1).float()  # (B,)
        buckets = difficulty_buckets(correct, G)  # (B,)
        sums, counts = bucket_mean(hwe_counts, buckets)
        sums, counts = self._world_sum(sums), self._world_sum(counts)  # (3,) over all ranks
        self.hwe_targets.copy_(bucket_targets(sums, counts, self.hwe_targets))
        self.entropy_alpha.copy_(update_entropy_alpha(self.entropy_alpha, sums, counts, self.hwe_targets, hp.alpha_step))
        if hp.algorithm == "aepo":
            rewards = shaped_rewards(correct, hwe_counts, self.hwe_targets, buckets, self.entropy_alpha)
        else:
            rewards = correct.float()
        advantages = group_advantages(rewards, G)  # (B,)
        keep = accuracy_group_mask(correct, G) if hp.filter_groups else torch.ones_like(correct, dtype=torch.bool)
        beta = self.kl_beta if hp.dynamic_kl else torch.ones(3, device=self.device)
        rollout.update(
            old_logprobs=old_logprobs, ref_logprobs=ref_logprobs, advantages=advantages, rewards=rewards,
            correct=correct, keep=keep, loss_mask=mask * keep.unsqueeze(1), mask=mask,  # (B, T) each
            kl_coef_seq=hp.kl_coef * beta[buckets], hwe_counts=hwe_counts, buckets=buckets,  # (B,) each
            lengths=mask.sum(dim=1).float(), kl=None,  # (B,)
        )

        # per-bucket KL controller on all-reduced per-sequence KL (identical on every rank)
        if ref_logprobs is not None:
            kl_tok = kl_penalty(old_logprobs, ref_logprobs, hp.kl_estimator)  # (B, T)
            kl_seq = (kl_tok * mask).sum(dim=1) / rollout["lengths"].clamp(min=1.0)  # (B,)
            rollout["kl"] = (kl_tok * mask).sum() / mask.sum().clamp(min=1)  # filtered groups included
            kl_sums, kl_counts = bucket_mean(kl_seq, buckets)
            kl_sums, kl_counts = self._world_sum(kl_sums), self._world_sum(kl_counts)
            if hp.dynamic_kl:
                self.controller_steps += 1
                new = update_kl_controller(
                    self.kl_ema, self.kl_error_ema, self.kl_log_beta, kl_sums, kl_counts,
                    target=torch.tensor(hp.kl_target, device=self.device),
                    update_beta=int(self.controller_steps) % hp.kl_update_interval == 0,
                )
                for buf, value in zip((self.kl_ema, self.kl_error_ema, self.kl_log_beta), new):
                    buf.copy_(value)

    @torch.no_grad()
    def _log_train(self, rollout: dict, stats: dict[str, Tensor]) -> None:
        """Log the rollout's signals and the last update's ``stats`` (the keys of ``TRAINING_METRICS``)."""
        hp = self.hparams
        correct, rewards, entropy, mask = rollout["correct"], rollout["rewards"], rollout["entropy"], rollout["mask"]
        hwe_counts, buckets, lengths, keep = rollout["hwe_counts"], rollout["buckets"], rollout["lengths"], rollout["keep"]
        n_tok = mask.sum().clamp(min=1)
        beta = self.kl_beta if hp.dynamic_kl else torch.ones(3, device=self.device)
        hwe_sums, counts = bucket_mean(hwe_counts, buckets)  # (3,) each
        len_sums, _ = bucket_mean(lengths, buckets)
        present = counts > 0
        nan = torch.full_like(counts, float("nan"))
        names = list(_SCALAR_KEYS)
        scalars = [rewards.mean(), correct.float().mean(), (entropy * mask).sum() / n_tok, self.hwe_threshold,
                   hwe_counts.mean(), lengths.mean(), keep.float().mean(), stats["pg_loss"], stats["kl"],
                   stats["clip_frac"], stats["selected_frac"]]
        per_bucket = {
            "kl_coef": hp.kl_coef * beta, "alpha": self.entropy_alpha, "hwe_target": self.hwe_targets,
            "frac": counts / counts.sum().clamp(min=1.0),
            "hwe_count": torch.where(present, hwe_sums / counts.clamp(min=1.0), nan),
            "length": torch.where(present, len_sums / counts.clamp(min=1.0), nan),
        }
        for key in _BUCKET_KEYS:
            names += [f"train/{key}_{b}" for b in BUCKET_NAMES]
            scalars += list(per_bucket[key].float())
        # one device-to-host transfer for the whole row (no sync per metric)
        values = torch.stack([torch.as_tensor(v, device=self.device).float().reshape(()) for v in scalars]).tolist()
        row = {k: v for k, v in zip(names, values) if v == v}  # drop NaN: buckets absent from this batch
        for key, value in row.items():
            self.log(key, value, on_step=True, on_epoch=False, prog_bar=key in ("train/reward", "train/accuracy"),
                     batch_size=len(buckets))

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: dict, stage: str) -> None:
        """One completion per prompt at ``eval_temperature``; accumulate per-level counts, accuracy, length, HWE."""
        hp = self.hparams
        roll = self.generate(batch["prompt"], batch.get("image"), group_size=1, temperature=hp.eval_temperature)
        mask = roll["completion_mask"]  # (B, T)
        texts = decode_completions(self.bundle.tokenizer, roll["completion_ids"], mask)
        correct = self._score(texts, batch["answer"], batch["answer_type"]).to(self.device)  # (B,)
        entropy = token_entropy(roll["logits"], hp.entropy_chunk_size)  # (B, T) from the raw generation logits
        hwe_counts = self._hwe(entropy, mask, roll["completion_ids"], update_threshold=False).sum(1).float()  # (B,)
        lengths = mask.sum(1).float()  # (B,)
        levels = batch["level"].to(self.device)  # (B,)
        # per level: count, correct, length, hwe (reduced over ranks when computed, at epoch end)
        stacked = torch.stack([torch.ones_like(correct), correct, lengths, hwe_counts], dim=1)  # (B, 4)
        sums = self.eval_sums[stage]
        sums.update(levels.clamp(0, sums.sums.shape[0] - 1), stacked)

    def _eval_epoch_end(self, stage: str) -> None:
        """Log ``<stage>/acc``, ``length``, ``hwe_count``, overall and per generator level, and ``<stage>/rows`` (the
        prompts scored), all over the prompts of every rank."""
        sums = self.eval_sums[stage].compute().float()  # (6, 4), every rank's rows: identical on every rank
        self.eval_sums[stage].reset()
        if sums[:, 0].sum() == 0:
            return
        total = sums.sum(0)
        n = total[0].clamp(min=1)
        self.log(f"{stage}/rows", total[0], sync_dist=False)  # prompts scored on every rank, each once
        self.log(f"{stage}/acc", total[1] / n, sync_dist=False)
        self.log(f"{stage}/length", total[2] / n, sync_dist=False)
        self.log(f"{stage}/hwe_count", total[3] / n, sync_dist=False)
        for level in range(sums.shape[0]):
            if sums[level, 0] > 0:
                c = sums[level, 0]
                self.log(f"{stage}/acc_level{level}", sums[level, 1] / c, sync_dist=False)
                self.log(f"{stage}/length_level{level}", sums[level, 2] / c, sync_dist=False)
                self.log(f"{stage}/hwe_count_level{level}", sums[level, 3] / c, sync_dist=False)

    def on_validation_start(self) -> None:
        """Under FSDP, check that every rank runs as many validation batches (each forward is a collective)."""
        check_same_batch_count(self.model, self.trainer.num_val_batches, "val")

    def on_test_start(self) -> None:
        """Under FSDP, check that every rank runs as many test batches (each forward is a collective)."""
        check_same_batch_count(self.model, self.trainer.num_test_batches, "test")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Sample and score one completion per validation prompt."""
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        """Log the ``val/*`` metrics."""
        self._eval_epoch_end("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        """Sample and score one completion per test prompt."""
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        """Log the ``test/*`` metrics."""
        self._eval_epoch_end("test")

    # ------------------------------------------------------------------ optimisation, checkpoints, plots
    def configure_optimizers(self):
        """AdamW on the trainable parameters (the adapters under LoRA)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay)

    def configure_callbacks(self) -> list:
        """The history of the training signals: a ``vlkit.callbacks.MetricHistory`` (one row per rollout batch)
        that writes ``ares_history.json`` and draws ``ares_training.png`` (``TRAINING_PANELS``) in ``plot_dir``
        (default: the trainer's log directory) at the end of fit. It replaces a ``MetricHistory`` listed in
        the trainer's callbacks."""
        return [MetricHistory(TRAINING_METRICS, panels=TRAINING_PANELS, interval="step", directory=self.hparams.plot_dir,
                              json_file="ares_history.json", png_file="ares_training.png")]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record the class, the controller state and the frozen reference copy (full fine-tuning only)."""
        record_class(checkpoint, self)  # checkpoint["vlkit_class"]: which class wrote it
        checkpoint["ares_controller"] = self.controller_state()
        reference = self.reference.state_dict()
        if reference:
            checkpoint["ares_reference_policy"] = reference

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Lightning's ``load_from_checkpoint``; a checkpoint written before the ``language_model`` group (flat
        ``model_name``, ``lora_r``, ... hyperparameters) loads too, those values regrouped."""
        groups = regrouped_hyperparameters(checkpoint_path, {"language_model": LanguageModelSettings})
        return super().load_from_checkpoint(checkpoint_path, *args, **{**groups, **kwargs})

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore the controller state and the frozen reference copy. Checkpoints written before the policy
        core kept the full-fine-tuning reference as a submodule (``ref_model.*`` weights): those become the
        frozen copy."""
        old_reference = {k: checkpoint["state_dict"].pop(k) for k in list(checkpoint.get("state_dict", {}))
                         if k.startswith("ref_model.")}
        if old_reference:
            names = dict(self.model.named_parameters())
            old_reference = {k[len("ref_model."):]: v for k, v in old_reference.items() if k[len("ref_model."):] in names}
        reference = checkpoint.get("ares_reference_policy") or old_reference
        if reference:
            self.reference.load_state_dict(reference)
        state = checkpoint.get("ares_controller")
        if state is None:
            return
        for key in _CONTROLLER_KEYS:
            buf = getattr(self, key)
            buf.copy_(torch.tensor(state[key], dtype=buf.dtype))
