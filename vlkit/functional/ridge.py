"""Closed-form ridge regression (used to align the offline preset's text tower to its image tower)."""

from __future__ import annotations

import torch
from torch import Tensor

from vlkit.errors import ConfigError, check_positive


def ridge_fit(inputs: Tensor, targets: Tensor, ridge_lambda: float) -> Tensor:
    """Solve min_M ||X M - Y||_F^2 + lam ||M||_F^2, i.e. M = (X^T X + lam I)^{-1} X^T Y.

    Args:
        inputs: X, (N, Din).
        targets: Y, (N, Dout).
        ridge_lambda: lam > 0.

    Returns:
        M, (Din, Dout), computed in float64 for stability.
    """
    check_positive("ridge_lambda", ridge_lambda)
    if inputs.dim() != 2 or targets.dim() != 2 or inputs.shape[0] != targets.shape[0]:
        raise ConfigError(
            f"inputs (N, Din) and targets (N, Dout) must share N, got {tuple(inputs.shape)} and {tuple(targets.shape)}",
            argument="targets",
        )
    x = inputs.double()
    gram = x.T @ x + ridge_lambda * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)  # (Din, Din)
    return torch.linalg.solve(gram, x.T @ targets.double()).to(inputs.dtype)  # (Din, Dout)
