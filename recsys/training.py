"""Training helpers shared by the recsys Lightning modules (not a method): ranking-metric logging with
confidence intervals and the parameter-drift callback."""

from __future__ import annotations

import lightning as L
import torch

from recsys.functional.metrics import ranking_metrics

__all__ = ["log_ranking", "DEFAULT_KS", "ParameterDrift"]

DEFAULT_KS = (1, 3, 5, 10, 20)


def log_ranking(module, stage: str, ranks: list[torch.Tensor], ks=DEFAULT_KS, prefix: str = "") -> dict[str, float]:
    """Log ``<stage>/<prefix>hr@K``, ``ndcg@K`` and their 95 % interval half-widths ``..._ci``."""
    if not ranks:
        return {}
    rank = torch.cat([r.detach().cpu() for r in ranks])
    out: dict[str, float] = {}
    for name, (mean, ci) in ranking_metrics(rank, tuple(ks)).items():
        out[f"{stage}/{prefix}{name}"] = mean
        out[f"{stage}/{prefix}{name}_ci"] = ci
    out[f"{stage}/{prefix}rows"] = float(rank.numel())
    module.log_dict(out, sync_dist=False)
    return out


class ParameterDrift(L.Callback):
    """Lightning callback logging ``train/param_drift``: ||theta - theta_start|| / ||theta_start|| over the
    trainable parameters, at the end of every training epoch (a diagnostic for RL drift and for smoke tests)."""

    def on_fit_start(self, trainer, pl_module):
        self.start = {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad}

    def on_train_epoch_end(self, trainer, pl_module):
        num, den = 0.0, 0.0
        for n, p in pl_module.named_parameters():
            if n in self.start:
                num += (p.detach() - self.start[n]).float().pow(2).sum().item()
                den += self.start[n].float().pow(2).sum().item()
        pl_module.log("train/param_drift", (num / max(den, 1e-12)) ** 0.5)
