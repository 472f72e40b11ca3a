"""Zero-shot classification heads from text embeddings (CLIP, Radford et al. 2021, sec. 3.1.4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vlkit.errors import ConfigError, check_int, check_positive

__all__ = ["SIMPLE_TEMPLATE", "class_embeddings_from_prompts", "zeroshot_logits"]

# CLIP's default prompt (sec. 3.1.4, "A photo of a {label}."): the kit's one definition, used by the text
# classifier (vlkit.models.zeroshot), the prompt library (vlkit.data.prompts) and ProAPO's baseline
SIMPLE_TEMPLATE = "a photo of a {}."


def class_embeddings_from_prompts(prompt_embeddings: Tensor, prompt_class: Tensor, num_classes: int) -> Tensor:
    """Class weights as the renormalised mean of L2-normalised prompt embeddings (CLIP's ensembling).

    Args:
        prompt_embeddings: (P, D) one row per prompt string.
        prompt_class: (P,) class index of each prompt.
        num_classes: C, an int >= 1.

    Returns:
        (C, D) unit-norm class weights. Raises if a class has no prompt.
    """
    check_int("num_classes", num_classes, low=1)
    if prompt_embeddings.dim() != 2 or prompt_class.dim() != 1 or prompt_embeddings.shape[0] != prompt_class.shape[0]:
        raise ConfigError(
            f"prompt_embeddings must be (P, D) and prompt_class (P,), got {tuple(prompt_embeddings.shape)} and "
            f"{tuple(prompt_class.shape)}",
            argument="prompt_class",
        )
    if prompt_class.numel() and (int(prompt_class.min()) < 0 or int(prompt_class.max()) >= num_classes):
        raise ConfigError(
            f"prompt_class must hold class indices in [0, {num_classes - 1}], got values in "
            f"[{int(prompt_class.min())}, {int(prompt_class.max())}]",
            argument="prompt_class",
        )
    normed = F.normalize(prompt_embeddings.float(), dim=-1)  # (P, D)
    sums = torch.zeros(num_classes, normed.shape[1], dtype=normed.dtype, device=normed.device)  # (C, D)
    sums.index_add_(0, prompt_class.to(normed.device), normed)
    counts = torch.bincount(prompt_class, minlength=num_classes)  # (C,)
    if (counts == 0).any():
        raise ConfigError(
            f"every class needs at least one prompt, got none for classes {torch.nonzero(counts == 0).flatten().tolist()}",
            argument="prompt_class",
        )
    return F.normalize(sums, dim=-1)  # (C, D): the mean's direction equals the sum's


def zeroshot_logits(features: Tensor, class_weights: Tensor, logit_scale: float = 100.0) -> Tensor:
    """logits = s * normalize(f) W^T.  features (N, D), class_weights (C, D) -> (N, C); logit_scale > 0."""
    check_positive("logit_scale", logit_scale)
    if features.shape[-1] != class_weights.shape[-1]:
        raise ConfigError(
            f"features have dimension {features.shape[-1]} but class_weights {class_weights.shape[-1]}: "
            "were they made by the same backbone?",
            argument="class_weights",
        )
    return logit_scale * F.normalize(features, dim=-1) @ F.normalize(class_weights, dim=-1).T  # (N, C)
