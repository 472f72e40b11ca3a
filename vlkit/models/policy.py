"""The policy core's pieces that hold weights, shared by ARES (``vlkit.methods.ares``) and MiniOneRec RL
(``recsys.methods.minionerec``): sampling rollouts, the reference policy, and the K-updates-per-rollout loop.

The tensor math (log-probs of sampled tokens, advantages, clipped surrogate, KL, clip statistics) is in
``vlkit.functional.policy``; this module adds what needs a model or an optimiser:

- :func:`sample_completions` / :func:`decode_completions`: ``transformers`` ``generate`` in eval mode, the
  completion mask (up to the first EOS) and the texts;
- :class:`ReferencePolicy`: pi_ref of the KL term without a second model where possible (peft's disabled
  adapter), else a frozen copy of the trainable weights, taken lazily at the first reference pass;
- :func:`policy_updates` and :func:`manual_optimizer_step`: K optimiser updates on one rollout batch
  through Lightning's manual optimisation (``manual_backward``, ``clip_gradients``, ``optimizer.step``).

No Lightning import here (the layer rule): the step callback only calls the methods of the module it is
given.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from vlkit.errors import ConfigError, check_int, check_positive
from vlkit.functional.policy import completion_mask_after_eos

__all__ = [
    "ReferencePolicy",
    "decode_completions",
    "manual_optimizer_step",
    "policy_updates",
    "sample_completions",
]


@torch.no_grad()
def sample_completions(model: nn.Module, inputs: dict[str, Tensor], generation_config: Any, eos_token_id: int) -> dict:
    """Sample completions with ``model.generate`` (in eval mode; the training mode is restored after).

    Args:
        model: a ``transformers`` generation model (a peft model too).
        inputs: the left-padded model inputs of the prompts: ``input_ids`` (B, P), ``attention_mask`` (B, P)
            and, for vision-language models, pixel values and the like (passed on as ``extra``).
        generation_config: a ``transformers.GenerationConfig``; with ``output_logits=True`` the raw logits
            of every generated position come back too.
        eos_token_id: the id that ends a completion.

    Returns:
        a dict: ``input_ids`` (B, P + T) prompt + completion, ``attention_mask`` (B, P + T) (completion
        tokens after the first EOS masked), ``completion_ids`` (B, T), ``completion_mask`` (B, T) (1 up to
        and including the first EOS), ``prompt_length`` P, ``extra`` (the other inputs, for the training
        forward; ``mm_token_type_ids`` extended by zeros, completion tokens being text) and ``logits``
        (B, T, V) or None.
    """
    was_training = model.training
    model.eval()
    try:
        out = model.generate(**inputs, generation_config=generation_config)
    finally:
        model.train(was_training)
    P = inputs["input_ids"].shape[1]
    completion = out.sequences[:, P:]  # (B, T)
    completion_mask = completion_mask_after_eos(completion, eos_token_id)  # (B, T)
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    if "mm_token_type_ids" in extra:  # completion tokens are text (type 0)
        extra["mm_token_type_ids"] = torch.cat([extra["mm_token_type_ids"], torch.zeros_like(completion)], dim=1)  # (B, P + T)
    logits = getattr(out, "logits", None)
    return {
        "input_ids": out.sequences,
        "attention_mask": torch.cat([inputs["attention_mask"], completion_mask], dim=1),  # (B, P + T)
        "completion_ids": completion,
        "completion_mask": completion_mask,
        "prompt_length": P,
        "extra": extra,
        "logits": torch.stack(logits, dim=1) if logits else None,  # (B, T, V)
    }


def decode_completions(tokenizer: Any, completion_ids: Tensor, completion_mask: Tensor) -> list[str]:
    """The texts of (B, T) sampled completions, tokens outside ``completion_mask`` and special tokens dropped."""
    ids = completion_ids.masked_fill(completion_mask == 0, tokenizer.pad_token_id)  # (B, T)
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


class ReferencePolicy:
    """The frozen reference policy pi_ref of the KL term, with as little extra memory as the model allows.

    Two ways, chosen by the caller, who knows where the policy started:

    - ``use_disabled_adapter=True``: the model is a peft model whose adapters started untrained (LoRA's B
      matrices are zero at creation), so the base model *is* the initial policy. The reference pass runs
      the same model under ``model.disable_adapter()``; nothing is copied.
    - ``use_disabled_adapter=False``: the model's trainable parameters are copied and frozen at the first
      reference pass (lazily, so before the first update of a run) and the reference pass runs the model
      with those tensors in place (``torch.func.functional_call``). Under full fine-tuning that is a frozen
      copy of every weight (buffers are shared); under LoRA whose adapters were already trained (a
      MiniOneRec SFT checkpoint) only the adapters are copied, and the disabled adapter would be the wrong
      reference (the base model before SFT).

    Use it as a context manager around the reference forward::

        with reference(model) as ref_model:        # no gradients inside
            ref_logits = ref_model(input_ids=..., attention_mask=...).logits

    Args:
        use_disabled_adapter: run the reference as the model with its peft adapters disabled (see above).
    """

    def __init__(self, use_disabled_adapter: bool = False) -> None:
        if not isinstance(use_disabled_adapter, bool):
            raise ConfigError(f"use_disabled_adapter must be true or false, got {use_disabled_adapter!r}",
                              argument="use_disabled_adapter")
        self.use_disabled_adapter = use_disabled_adapter
        self.frozen: dict[str, Tensor] | None = None  # name -> frozen tensor (copy mode, after the first pass)

    @contextmanager
    def __call__(self, model: nn.Module) -> Iterator[Callable[..., Any]]:
        """Yield a callable that runs pi_ref like ``model`` (keyword inputs), under ``torch.no_grad()``."""
        with torch.no_grad():
            if self.use_disabled_adapter:
                if not hasattr(model, "disable_adapter"):
                    raise ConfigError(
                        f"use_disabled_adapter needs a peft model (with disable_adapter()), got a {type(model).__name__}",
                        argument="use_disabled_adapter",
                    )
                with model.disable_adapter():
                    yield model
                return
            frozen = self._frozen_for(model)
            yield lambda **inputs: torch.func.functional_call(model, frozen, args=(), kwargs=inputs)

    def _frozen_for(self, model: nn.Module) -> dict[str, Tensor]:
        """The frozen tensors, copied from ``model``'s trainable parameters at the first call."""
        if self.frozen is None:
            self.frozen = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        device = next((p.device for p in model.parameters()), None)
        if device is not None and any(t.device != device for t in self.frozen.values()):
            self.frozen = {n: t.to(device) for n, t in self.frozen.items()}  # the model moved since the copy
        return self.frozen

    def reset(self) -> None:
        """Forget the frozen copy: the next reference pass copies the model's weights as they are then."""
        self.frozen = None

    def state_dict(self) -> dict[str, Tensor]:
        """The frozen copy (empty before the first reference pass, and always with the disabled adapter)."""
        return dict(self.frozen or {})

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore a frozen copy saved by :meth:`state_dict` (an empty dict leaves the copy to be taken lazily)."""
        if not isinstance(state, dict):
            raise ConfigError(f"the reference policy state must be a dict of tensors, got {type(state).__name__}",
                              argument="reference_policy")
        self.frozen = dict(state) if state else None


def policy_updates(
    loss_of_update: Callable[[int], tuple[Tensor, dict[str, Tensor]]],
    apply_update: Callable[[Tensor], None],
    updates: int = 1,
) -> list[dict[str, Tensor]]:
    """K optimiser updates on one rollout batch (PPO-style reuse of the samples).

    Update k calls ``loss_of_update(k)`` (a fresh forward of the current policy, its loss and detached
    statistics), then ``apply_update(loss)`` (backward, clipping, optimiser step; see
    :func:`manual_optimizer_step`). The rollout's log-probs pi_old are the detached log-probs of update 0,
    when the policy has not moved yet, so the importance ratio of update 0 is exactly 1 and K = 1 is plain
    on-policy GRPO.

    Args:
        loss_of_update: k -> (scalar loss, dict of detached scalar statistics).
        apply_update: loss -> None, one optimiser step.
        updates: K, an int >= 1.

    Returns:
        one dict per update: ``loss`` (detached) and the statistics of that update.
    """
    check_int("updates", updates, low=1)
    history = []
    for k in range(updates):
        loss, stats = loss_of_update(k)
        apply_update(loss)
        history.append({"loss": loss.detach(), **stats})
    return history


def manual_optimizer_step(module: Any, optimizer: Any, max_grad_norm: float | None = None) -> Callable[[Tensor], None]:
    """The ``apply_update`` of :func:`policy_updates` for a LightningModule under manual optimisation.

    Args:
        module: the ``LightningModule`` (its ``manual_backward`` and ``clip_gradients`` handle precision
            and distributed strategies).
        optimizer: its (Lightning-wrapped) optimiser, ``module.optimizers()``.
        max_grad_norm: clip the gradients' global L2 norm to this (> 0), or None for no clipping.

    Returns:
        loss -> None: zero the gradients, backward, clip, step.
    """
    check_positive("max_grad_norm", max_grad_norm, allow_none=True)

    def step(loss: Tensor) -> None:
        optimizer.zero_grad()
        module.manual_backward(loss)
        if max_grad_norm is not None:
            module.clip_gradients(optimizer, gradient_clip_val=max_grad_norm, gradient_clip_algorithm="norm")
        optimizer.step()

    return step
