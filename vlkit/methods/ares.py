"""ARES: difficulty-aware entropy shaping for RL with verifiable rewards (arXiv 2510.08457).

``LitARES`` post-trains a Hugging Face causal LM or vision-language model (Qwen2-VL style processor)
with group-sampled rollouts from ``transformers`` ``generate``, verifiable rewards (``vlkit.data.reasoning``
checkers), and the AEPO objective (``vlkit.functional.aepo``) or plain GRPO. Every equation lives in
``vlkit.functional.entropy`` / ``aepo`` / ``policy``; this module orchestrates and logs.

One training step (one rollout batch, one optimiser update, so the importance ratio is 1 at the update;
the authors take 4 updates per rollout batch, see docs/papers.md (ARES section)):
 1. sample G completions per prompt; 2. score them (accuracy in {0, 1});
 3. one forward pass: log-probs of the sampled tokens and the exact full-vocabulary entropy;
 4. window entropy, per-response 95th percentile, global threshold tau (decayed median), HWE tokens;
 5. difficulty bucket per group from its pass rate, per-bucket HWE targets and alpha (all-reduced);
 6. reward = accuracy (GRPO) or accuracy + hierarchical entropy reward (AEPO), computed *after* 5;
 7. GRPO advantages; groups with pass rate 0 or 1 masked out (filter on accuracy, optional);
 8. loss = clipped surrogate + kl_coef * beta_bucket * k3 KL to the reference (LoRA disabled);
 9. per-bucket KL controller step on all-reduced statistics (identical on every rank, checkpointed).

``LitColdStartSFT`` trains on the adaptive cold-start pairs of ``ColdStartSFTDataModule``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from vlkit.checkpoints import record_class
from vlkit.data.reasoning import check_answer
from vlkit.errors import (
    ConfigError,
    check_choice,
    check_int,
    check_non_negative,
    check_number,
    check_positive,
    check_probability,
)
from vlkit.functional.aepo import TOKEN_SELECTIONS, accuracy_group_mask, aepo_loss, shaped_rewards
from vlkit.functional.entropy import (
    BUCKET_NAMES,
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
from vlkit.functional.policy import group_advantages, kl_penalty
from vlkit.models.language import (
    DEFAULT_TRIGGER_WORDS,
    LanguageModelBundle,
    apply_lora,
    create_language_model,
    trigger_token_ids,
)

__all__ = ["LitARES", "LitColdStartSFT", "completion_mask_after_eos", "estimate_pass_rates", "plot_training_history"]

ALGORITHMS = ("aepo", "grpo")
DTYPES = ("float32", "bfloat16", "float16")
KL_ESTIMATORS = ("k1", "k2", "k3")


def _check_model_args(model_name, dtype, lora_r, lora_alpha, lora_dropout, lora_target_modules, learning_rate,
                      weight_decay) -> None:
    """Arguments shared by LitARES and LitColdStartSFT, checked before the model is built."""
    if not isinstance(model_name, str) or not model_name.strip():
        raise ConfigError(
            f"model_name must be a non-empty string (a preset or a Hugging Face id / directory), got {model_name!r}",
            argument="model_name",
        )
    check_choice("dtype", dtype, DTYPES)
    check_int("lora_r", lora_r, low=0)
    check_positive("lora_alpha", lora_alpha)
    check_probability("lora_dropout", lora_dropout, open_high=True)
    if lora_target_modules is not None and not isinstance(lora_target_modules, str):
        if not lora_target_modules or not all(isinstance(m, str) and m for m in lora_target_modules):
            raise ConfigError(
                f"lora_target_modules must be 'all-linear', a module name or a non-empty list of names, "
                f"got {lora_target_modules!r}",
                argument="lora_target_modules",
            )
    check_positive("learning_rate", learning_rate)
    check_non_negative("weight_decay", weight_decay)
_CONTROLLER_KEYS = ("hwe_threshold", "hwe_targets", "entropy_alpha", "kl_ema", "kl_error_ema", "kl_log_beta", "controller_steps")


def _atomic_write_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def plot_training_history(history: list[dict], path: str | Path) -> Path:
    """Plot the logged training signals (reward, entropy, HWE counts, KL coefficient and length per
    bucket) into one PNG, written atomically. ``history``: one dict of floats per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    panels = [
        ("reward / accuracy", ["train/reward", "train/accuracy"]),
        ("token entropy", ["train/entropy", "train/hwe_threshold"]),
        ("HWE tokens per response", [f"train/hwe_count_{b}" for b in BUCKET_NAMES]),
        ("KL coefficient", [f"train/kl_coef_{b}" for b in BUCKET_NAMES]),
        ("response length", [f"train/length_{b}" for b in BUCKET_NAMES]),
        ("KL to reference", ["train/kl"]),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            pts = [(h["step"], h[key]) for h in history if key in h and math.isfinite(h[key])]
            if pts:
                ax.plot(*zip(*pts), label=key.split("/", 1)[1], marker="." if len(pts) < 30 else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    _atomic_write_bytes(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
    return path


def completion_mask_after_eos(completion: Tensor, eos_token_id: int) -> Tensor:
    """(B, T) long mask: 1 for tokens up to and including the first EOS (what generate pads after)."""
    is_eos = (completion == eos_token_id).long()  # (B, T)
    after_eos = (is_eos.cumsum(dim=1) - is_eos) > 0  # (B, T) strictly after the first EOS
    return (~after_eos).long()


class _PolicyMixin:
    """Shared prompt encoding, generation and log-prob computation of LitARES and LitColdStartSFT."""

    bundle: LanguageModelBundle
    model: torch.nn.Module
    system_prompt: str | None

    def _messages(self, prompt: str, with_image: bool) -> list[dict]:
        content = [{"type": "image"}, {"type": "text", "text": prompt}] if with_image else prompt
        msgs = [{"role": "user", "content": content}]
        if self.system_prompt:
            msgs.insert(0, {"role": "system", "content": self.system_prompt})
        return msgs

    def _encode_prompts(self, prompts: list[str], images: list | None) -> dict[str, Tensor]:
        """Left-padded model inputs for a list of prompts (and one image each for VLMs)."""
        tok = self.bundle.tokenizer
        if images is not None and not self.bundle.is_multimodal:
            raise ConfigError(
                "the batch holds images but the model has no image processor: model_name must be a vision-language "
                "model for image data",
                argument="model_name",
            )
        chat = self.bundle.processor if self.bundle.is_multimodal else tok
        texts = [chat.apply_chat_template(self._messages(p, images is not None), tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        if self.bundle.is_multimodal:
            if images is None:
                enc = self.bundle.processor(text=texts, return_tensors="pt", padding=True)
            else:
                enc = self.bundle.processor(text=texts, images=images, return_tensors="pt", padding=True)
        else:
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return {k: v.to(self.device) for k, v in enc.items() if isinstance(v, Tensor)}

    def _suppressed_token_ids(self) -> list[int] | None:
        """Vision placeholder tokens must never be sampled (they would break the image-token count)."""
        if not self.bundle.is_multimodal:
            return None
        cfg = self._base_model().config
        ids = [getattr(cfg, k, None) for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")]
        return [int(i) for i in ids if i is not None]

    def _base_model(self):
        model = self.model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _forward_logits(self, input_ids: Tensor, attention_mask: Tensor, extra: dict[str, Tensor], model=None) -> Tensor:
        """Logits (B, L, V) of a full (prompt + completion) batch, positions following the left padding."""
        model = self.model if model is None else model
        kwargs = dict(extra)
        if not self.bundle.is_multimodal:
            # left padding: positions count from the first real token, as generate() does
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, L)
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs).logits


def _sequence_logprobs(logits: Tensor, targets: Tensor) -> Tensor:
    """log softmax(logits)[target] without materialising a second (B, T, V) tensor.  (B, T, V), (B, T) -> (B, T)."""
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1).float()  # (B, T)
    return picked - torch.logsumexp(logits.float(), dim=-1)  # (B, T)


class LitARES(_PolicyMixin, L.LightningModule):
    """RL post-training with ARES' AEPO (difficulty-aware entropy shaping) or plain GRPO.

    Args:
        model_name: a ``vlkit.models.language`` preset (``tiny-random-lm``, ``tiny-random-qwen2-vl``,
            ``smollm2-135m-instruct``) or a Hugging Face id / directory.
        dtype: weights dtype (``float32``, ``bfloat16``, ``float16``).
        lora_r: LoRA rank, an int >= 0; 0 trains all weights (and keeps a frozen copy as the reference policy).
        lora_alpha, lora_dropout, lora_target_modules: peft LoRA settings (lora_alpha > 0, lora_dropout in
            [0, 1)).
        algorithm: ``"aepo"`` (accuracy + hierarchical entropy reward) or ``"grpo"`` (accuracy only).
        group_size: G samples per prompt (authors: 8); an int >= 2.
        max_new_tokens: completion budget per sample, an int >= 1.
        temperature, top_p: rollout sampling, temperature > 0, top_p in (0, 1] (authors: 1.0, 0.99).
        eval_temperature: validation/test sampling temperature, >= 0 (authors: 0.5); 0 means greedy.
        learning_rate, weight_decay: AdamW, > 0 and >= 0 (authors: 1e-6, 1e-2 for full fine-tuning).
        clip_low, clip_high, dual_clip: PPO clip range and dual clip, clip_low in [0, 1), clip_high >= 0 or
            None (= clip_low), dual_clip > 1 or None (authors: 0.2, 0.3, 3.0).
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
        alpha_init, alpha_step: entropy-reward scale per bucket and its update step (authors: 0.5, 0.05);
            alpha_init in [0, 2] (the range alpha is clipped to), alpha_step >= 0.
        filter_groups: mask groups whose pass rate is 0 or 1 (DAPO dynamic sampling, on accuracy).
        token_selection: ``all``, ``top_entropy`` (80/20), ``clip_cov`` or ``kl_cov``.
        top_entropy_rho: fraction of tokens kept by ``top_entropy``, in (0, 1] (0.2).
        entropy_chunk_size: rows per chunk of the full-vocabulary entropy, an int >= 1.
        system_prompt: optional system message.
        plot_dir: where to write ``ares_training.png`` and ``ares_history.json`` at the end of fit
            (default: the trainer's log directory).
        seed: initialisation seed of random tiny presets.
    """

    def __init__(
        self,
        model_name: str = "tiny-random-lm",
        dtype: str = "float32",
        lora_r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.0,
        lora_target_modules: list[str] | str | None = "all-linear",
        algorithm: str = "aepo",
        group_size: int = 8,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 0.99,
        eval_temperature: float = 0.5,
        learning_rate: float = 1e-6,
        weight_decay: float = 1e-2,
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
        entropy_chunk_size: int = 1024,
        system_prompt: str | None = None,
        plot_dir: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        _check_model_args(model_name, dtype, lora_r, lora_alpha, lora_dropout, lora_target_modules, learning_rate,
                          weight_decay)
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
        self.save_hyperparameters()
        self.system_prompt = system_prompt
        self.bundle = create_language_model(model_name, dtype=dtype, seed=seed)
        self.ref_model = None
        if lora_r > 0:
            self.model = apply_lora(self.bundle.model, lora_r, lora_alpha, lora_dropout, lora_target_modules)
        else:
            self.model = self.bundle.model
            if kl_coef > 0:  # no adapter to disable: keep a frozen copy as the reference policy
                self.ref_model = copy.deepcopy(self.bundle.model).eval().requires_grad_(False)
        self.bundle.model = self.model
        # controller state: buffers (so they follow the device and sit in state_dict) + on_save_checkpoint
        self.register_buffer("hwe_threshold", torch.tensor(-1.0))  # tau, -1 = not set yet
        self.register_buffer("hwe_targets", torch.zeros(3))  # per bucket
        self.register_buffer("entropy_alpha", torch.full((3,), float(alpha_init)))
        self.register_buffer("kl_ema", torch.tensor(kl_target, dtype=torch.float32))  # starts at target: e = 0
        self.register_buffer("kl_error_ema", torch.zeros(3))
        self.register_buffer("kl_log_beta", torch.zeros(3))  # beta = 1
        self.register_buffer("controller_steps", torch.tensor(0, dtype=torch.long))
        self._trigger_ids: Tensor | None = None
        self.history: list[dict] = []
        self._eval_sums: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ helpers
    @property
    def kl_beta(self) -> Tensor:
        return self.kl_log_beta.exp()

    def _world_sum(self, t: Tensor) -> Tensor:
        if self._trainer is not None and self._trainer.world_size > 1:
            return self.trainer.strategy.reduce(t.clone(), reduce_op="sum")
        return t

    def _world_cat(self, t: Tensor) -> Tensor:
        if self._trainer is not None and self._trainer.world_size > 1:
            return self.all_gather(t).reshape(-1)  # (world * B,)
        return t

    def trigger_ids(self) -> Tensor | None:
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
        enc = self._encode_prompts(rep_prompts, rep_images)
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
            suppress_tokens=self._suppressed_token_ids(),
            return_dict_in_generate=True,
            output_logits=True,
        )
        was_training = self.model.training
        self.model.eval()
        out = self.model.generate(**enc, generation_config=gen_cfg)
        self.model.train(was_training)
        P = enc["input_ids"].shape[1]
        completion = out.sequences[:, P:]  # (B, T)
        completion_mask = completion_mask_after_eos(completion, tok.eos_token_id)  # (B, T)
        extra = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
        if "mm_token_type_ids" in extra:  # completion tokens are text (type 0)
            extra["mm_token_type_ids"] = torch.cat(
                [extra["mm_token_type_ids"], torch.zeros_like(completion)], dim=1
            )  # (B, P + T)
        logits = torch.stack(out.logits, dim=1)  # (B, T, V)
        return {
            "input_ids": out.sequences,
            "attention_mask": torch.cat([enc["attention_mask"], completion_mask], dim=1),  # (B, P + T)
            "completion_ids": completion,
            "completion_mask": completion_mask,
            "prompt_length": P,
            "extra": extra,
            "logits": logits,
        }

    def _decode(self, completion_ids: Tensor, completion_mask: Tensor) -> list[str]:
        tok = self.bundle.tokenizer
        ids = completion_ids.masked_fill(completion_mask == 0, tok.pad_token_id)
        return tok.batch_decode(ids, skip_special_tokens=True)

    @staticmethod
    def _score(texts: list[str], answers: list[str], answer_types: list[str]) -> Tensor:
        return torch.tensor([check_answer(t, a, k) for t, a, k in zip(texts, answers, answer_types)])

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
        G = self.hparams.group_size
        if not batch["prompt"]:
            raise ConfigError("batch['prompt'] must hold at least one prompt, got an empty batch", argument="batch")
        roll = self.generate(batch["prompt"], batch.get("image"), group_size=G)
        texts = self._decode(roll["completion_ids"], roll["completion_mask"])
        answers = [a for a in batch["answer"] for _ in range(G)]
        kinds = [k for k in batch["answer_type"] for _ in range(G)]
        correct = self._score(texts, answers, kinds).to(self.device)  # (B,), B = prompts * G
        return self.rollout_loss(roll, correct)

    def rollout_loss(self, roll: dict, correct: Tensor) -> Tensor:
        """The policy loss of one scored rollout batch (``generate`` output and (B,) accuracy rewards);
        updates the controller state and logs. Split from ``training_step`` so it can be timed alone."""
        hp = self.hparams
        G = hp.group_size
        mask = roll["completion_mask"]  # (B, T)
        P = roll["prompt_length"]
        logits = self._forward_logits(roll["input_ids"], roll["attention_mask"], roll["extra"])[:, P - 1 : -1]  # (B, T, V)
        logprobs = _sequence_logprobs(logits, roll["completion_ids"])  # (B, T) with grad
        entropy = token_entropy(logits, hp.entropy_chunk_size)  # (B, T) exact, no grad
        del logits
        ref_logprobs = None
        if hp.kl_coef > 0:
            with torch.no_grad():
                if self.ref_model is None:
                    with self.model.disable_adapter():
                        ref_logits = self._forward_logits(roll["input_ids"], roll["attention_mask"], roll["extra"])
                else:
                    ref_logits = self._forward_logits(
                        roll["input_ids"], roll["attention_mask"], roll["extra"], model=self.ref_model
                    )
                ref_logprobs = _sequence_logprobs(ref_logits[:, P - 1 : -1], roll["completion_ids"])  # (B, T)
                del ref_logits

        # entropy signals and difficulty, all before any reward is computed (the authors' ordering bug)
        with torch.no_grad():
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
            loss_mask = mask * keep.unsqueeze(1)  # (B, T)
            beta = self.kl_beta if hp.dynamic_kl else torch.ones(3, device=self.device)
            kl_coef_seq = hp.kl_coef * beta[buckets]  # (B,)

        loss, stats = aepo_loss(
            logprobs, logprobs.detach(), advantages, loss_mask, ref_logprobs, kl_coef_seq,
            clip_low=hp.clip_low, clip_high=hp.clip_high, dual_clip=hp.dual_clip, kl_estimator=hp.kl_estimator,
            token_selection=hp.token_selection, entropy=entropy, top_entropy_rho=hp.top_entropy_rho,
        )

        # per-bucket KL controller on all-reduced per-sequence KL (identical on every rank)
        with torch.no_grad():
            lengths = mask.sum(dim=1).float()  # (B,)
            if ref_logprobs is not None:
                kl_tok = kl_penalty(logprobs.detach(), ref_logprobs, hp.kl_estimator)  # (B, T)
                kl_seq = (kl_tok * mask).sum(dim=1) / lengths.clamp(min=1.0)  # (B,)
                # log the KL of every sampled token (filtered groups included), as the controller sees it
                stats["kl"] = (kl_tok * mask).sum() / mask.sum().clamp(min=1)
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
            self._log_train(correct, rewards, entropy, mask, hwe_counts, buckets, lengths, keep, stats)
        return loss

    def _log_train(self, correct, rewards, entropy, mask, hwe_counts, buckets, lengths, keep, stats) -> None:
        hp = self.hparams
        n_tok = mask.sum().clamp(min=1)
        beta = self.kl_beta if hp.dynamic_kl else torch.ones(3, device=self.device)
        hwe_sums, counts = bucket_mean(hwe_counts, buckets)  # (3,) each
        len_sums, _ = bucket_mean(lengths, buckets)
        present = counts > 0
        nan = torch.full_like(counts, float("nan"))
        names = ["train/reward", "train/accuracy", "train/entropy", "train/hwe_threshold", "train/hwe_count",
                 "train/length", "train/kept_groups", "train/loss_pg", "train/kl", "train/clip_frac",
                 "train/selected_frac"]
        scalars = [rewards.mean(), correct.float().mean(), (entropy * mask).sum() / n_tok, self.hwe_threshold,
                   hwe_counts.mean(), lengths.mean(), keep.float().mean(), stats["pg_loss"], stats["kl"],
                   stats["clip_frac"], stats["selected_frac"]]
        per_bucket = {
            "kl_coef": hp.kl_coef * beta, "alpha": self.entropy_alpha, "hwe_target": self.hwe_targets,
            "frac": counts / counts.sum().clamp(min=1.0),
            "hwe_count": torch.where(present, hwe_sums / counts.clamp(min=1.0), nan),
            "length": torch.where(present, len_sums / counts.clamp(min=1.0), nan),
        }
        for key, values in per_bucket.items():
            names += [f"train/{key}_{b}" for b in BUCKET_NAMES]
            scalars += list(values.float())
        # one device-to-host transfer for the whole row (no sync per metric)
        values = torch.stack([torch.as_tensor(v, device=self.device).float().reshape(()) for v in scalars]).tolist()
        row = {k: v for k, v in zip(names, values) if v == v}  # drop NaN: buckets absent from this batch
        for key, value in row.items():
            self.log(key, value, on_step=True, on_epoch=False, prog_bar=key in ("train/reward", "train/accuracy"),
                     batch_size=len(buckets))
        if self._trainer is None or self._trainer.is_global_zero:
            self.history.append({"step": int(self.global_step), **row})

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: dict, stage: str) -> None:
        hp = self.hparams
        roll = self.generate(batch["prompt"], batch.get("image"), group_size=1, temperature=hp.eval_temperature)
        mask = roll["completion_mask"]  # (B, T)
        texts = self._decode(roll["completion_ids"], mask)
        correct = self._score(texts, batch["answer"], batch["answer_type"]).to(self.device)  # (B,)
        entropy = token_entropy(roll["logits"], hp.entropy_chunk_size)  # (B, T) from the raw generation logits
        hwe_counts = self._hwe(entropy, mask, roll["completion_ids"], update_threshold=False).sum(1).float()  # (B,)
        lengths = mask.sum(1).float()  # (B,)
        levels = batch["level"].to(self.device)  # (B,)
        n_levels = 6
        # per level: count, correct, length, hwe (summed here, reduced over ranks at epoch end)
        stacked = torch.stack([torch.ones_like(correct), correct, lengths, hwe_counts], dim=1)  # (B, 4)
        sums = torch.zeros(n_levels, 4, device=self.device).index_add_(0, levels.clamp(0, n_levels - 1), stacked)
        self._eval_sums[stage] = self._eval_sums.get(stage, torch.zeros_like(sums)) + sums

    def _eval_epoch_end(self, stage: str) -> None:
        sums = self._eval_sums.pop(stage, None)
        if sums is None:
            return
        sums = self._world_sum(sums)  # (6, 4)
        total = sums.sum(0)
        n = total[0].clamp(min=1)
        self.log(f"{stage}/acc", total[1] / n, sync_dist=False)
        self.log(f"{stage}/length", total[2] / n, sync_dist=False)
        self.log(f"{stage}/hwe_count", total[3] / n, sync_dist=False)
        for level in range(sums.shape[0]):
            if sums[level, 0] > 0:
                c = sums[level, 0]
                self.log(f"{stage}/acc_level{level}", sums[level, 1] / c, sync_dist=False)
                self.log(f"{stage}/length_level{level}", sums[level, 2] / c, sync_dist=False)
                self.log(f"{stage}/hwe_count_level{level}", sums[level, 3] / c, sync_dist=False)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # ------------------------------------------------------------------ optimisation, checkpoints, plots
    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        record_class(checkpoint, self)  # checkpoint["vlkit_class"]: which class wrote it
        checkpoint["ares_controller"] = self.controller_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("ares_controller")
        if state is None:
            return
        for key in _CONTROLLER_KEYS:
            buf = getattr(self, key)
            buf.copy_(torch.tensor(state[key], dtype=buf.dtype))

    def on_fit_end(self) -> None:
        # trainer.log_dir broadcasts from rank 0: every rank must ask for it
        log_dir = self._trainer.log_dir if self._trainer is not None else None
        if self._trainer is not None and not self._trainer.is_global_zero:
            return
        if not self.history:
            return
        out_dir = Path(self.hparams.plot_dir or log_dir or ".")
        plot_training_history(self.history, out_dir / "ares_training.png")
        text = json.dumps({"history": self.history, "controller": self.controller_state()})
        _atomic_write_bytes(out_dir / "ares_history.json", lambda tmp: Path(tmp).write_text(text))


@torch.no_grad()
def estimate_pass_rates(module: LitARES, problems: list, samples: int = 4, batch_prompts: int = 8) -> list[float]:
    """Measured pass rate of ``module``'s policy on each problem (``samples`` completions each), the input
    of ``vlkit.data.reasoning.build_adaptive_cold_start``. ``samples`` and ``batch_prompts``: ints >= 1."""
    check_int("samples", samples, low=1)
    check_int("batch_prompts", batch_prompts, low=1)
    rates: list[float] = []
    for start in range(0, len(problems), batch_prompts):
        chunk = problems[start : start + batch_prompts]
        roll = module.generate([p.prompt for p in chunk], None, group_size=samples)
        texts = module._decode(roll["completion_ids"], roll["completion_mask"])
        scores = LitARES._score(texts, [p.answer for p in chunk for _ in range(samples)],
                                [p.answer_type for p in chunk for _ in range(samples)])
        rates.extend(scores.view(len(chunk), samples).mean(1).tolist())  # (n_prompts,)
    return rates


class LitColdStartSFT(_PolicyMixin, L.LightningModule):
    """Supervised fine-tuning on adaptive cold-start pairs (``ColdStartSFTDataModule``): cross-entropy on
    the response tokens only (prompt tokens masked), chat template applied to the prompt.

    Args:
        model_name, dtype, lora_r, lora_alpha, lora_dropout, lora_target_modules: as in ``LitARES``.
        learning_rate, weight_decay: AdamW, > 0 and >= 0.
        max_length: truncate prompt + response to this many tokens, an int >= 2.
        system_prompt: optional system message.
        seed: initialisation seed of random tiny presets.
    """

    def __init__(
        self,
        model_name: str = "tiny-random-lm",
        dtype: str = "float32",
        lora_r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.0,
        lora_target_modules: list[str] | str | None = "all-linear",
        learning_rate: float = 1e-4,
        weight_decay: float = 0.0,
        max_length: int = 512,
        system_prompt: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        _check_model_args(model_name, dtype, lora_r, lora_alpha, lora_dropout, lora_target_modules, learning_rate,
                          weight_decay)
        check_int("max_length", max_length, low=2)
        check_int("seed", seed)
        self.save_hyperparameters()
        self.system_prompt = system_prompt
        self.bundle = create_language_model(model_name, dtype=dtype, seed=seed)
        if self.bundle.is_multimodal:
            raise ConfigError(
                f"model_name must be a causal LM preset or id (LitColdStartSFT trains text-only pairs), got the "
                f"vision-language model {model_name!r}",
                argument="model_name",
            )
        self.model = apply_lora(self.bundle.model, lora_r, lora_alpha, lora_dropout, lora_target_modules) if lora_r > 0 else self.bundle.model
        self.bundle.model = self.model

    def _batch_tensors(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        """Right-padded (input_ids, attention_mask, labels), each (B, L); labels -100 on prompt and padding."""
        tok = self.bundle.tokenizer
        rows = []
        for prompt, response in zip(batch["prompt"], batch["response"]):
            p = tok.apply_chat_template(self._messages(prompt, False), tokenize=False, add_generation_prompt=True)
            p_ids = tok(p, add_special_tokens=False)["input_ids"]
            r_ids = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            ids = (p_ids + r_ids)[: self.hparams.max_length]
            labels = ([-100] * len(p_ids) + r_ids)[: self.hparams.max_length]
            rows.append((ids, labels))
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)  # (B, L)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)  # (B, L)
        attention = torch.zeros((len(rows), width), dtype=torch.long)  # (B, L)
        for i, (ids, lab) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, : len(lab)] = torch.tensor(lab)
            attention[i, : len(ids)] = 1
        return input_ids.to(self.device), attention.to(self.device), labels.to(self.device)

    def _loss(self, batch: dict) -> tuple[Tensor, Tensor]:
        input_ids, attention, labels = self._batch_tensors(batch)
        logits = self.model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits  # (B, L, V)
        target = labels[:, 1:]  # (B, L-1) next-token targets
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=-100
        )
        return loss, (target != -100).sum()

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, n = self._loss(batch)
        bs = len(batch["prompt"])
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/response_tokens", n.float() / bs, batch_size=bs)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, _ = self._loss(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["prompt"]), sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        record_class(checkpoint, self)  # checkpoint["vlkit_class"]: which class wrote it

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay)
