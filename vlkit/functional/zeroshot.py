"""Zero-shot classification heads from text embeddings (CLIP, Radford et al. 2021, sec. 3.1.4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["class_embeddings_from_prompts", "zeroshot_logits"]


def class_embeddings_from_prompts(prompt_embeddings: Tensor, prompt_class: Tensor, num_classes: int) -> Tensor:
    """Class weights as the renormalised mean of L2-normalised prompt embeddings (CLIP's ensembling).

    Args:
        prompt_embeddings: (P, D) one row per prompt string.
        prompt_class: (P,) class index of each prompt.
        num_classes: C.

    Returns:
        (C, D) unit-norm class weights. Raises if a class has no prompt.
    """
    if prompt_embeddings.shape[0] != prompt_class.shape[0]:
        raise ValueError(
            f"prompt_embeddings has {prompt_embeddings.shape[0]} rows but prompt_class {prompt_class.shape[0]} entries"
        )
    normed = F.normalize(prompt_embeddings.float(), dim=-1)  # (P, D)
    sums = torch.zeros(num_classes, normed.shape[1], dtype=normed.dtype, device=normed.device)  # (C, D)
    sums.index_add_(0, prompt_class.to(normed.device), normed)
    counts = torch.bincount(prompt_class, minlength=num_classes)  # (C,)
    if (counts == 0).any():
        raise ValueError(f"classes {torch.nonzero(counts == 0).flatten().tolist()} have no prompt")
    return F.normalize(sums, dim=-1)  # (C, D): the mean's direction equals the sum's


def zeroshot_logits(features: Tensor, class_weights: Tensor, logit_scale: float = 100.0) -> Tensor:
    """logits = s * normalize(f) W^T.  features (N, D), class_weights (C, D) -> (N, C)."""
    if features.shape[-1] != class_weights.shape[-1]:
        raise ValueError(
            f"features have dimension {features.shape[-1]} but class_weights {class_weights.shape[-1]}: "
            "were they made by the same backbone?"
        )
    return logit_scale * F.normalize(features, dim=-1) @ F.normalize(class_weights, dim=-1).T  # (N, C)
