"""RQ-VAE for semantic IDs (TIGER, arXiv 2305.05065; MiniOneRec ``rq/models/rqvae.py``) on
vector-quantize-pytorch's :class:`ResidualVQ`.

x (B, D_in) -> MLP encoder -> z (B, D_e) -> residual quantiser (L levels of K codes) -> z_q -> MLP decoder
-> x_hat (B, D_in). Loss = MSE(x_hat, x) + commitment (the library's codebook update is an EMA).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["RQVAE", "mlp"]


def mlp(dims: list[int], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    """MLP auto-encoder around a residual vector quantiser.

    Args:
        input_dim: D_in, the text-embedding size.
        hidden_dims: encoder widths (the decoder mirrors them).
        latent_dim: D_e, the quantised latent size (authors: 32).
        num_levels: L (authors: 3).
        codebook_size: K (authors: 256).
        commitment_weight: beta (authors: 0.25).
        kmeans_init: initialise every codebook by k-means on the first batch (authors: yes).
        kmeans_iters: k-means iterations for the initialisation.
        ema_decay: EMA decay of the codebook updates (the library's default update rule).
        threshold_ema_dead_code: re-seed codes whose EMA cluster size falls below this (0 = off).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: tuple[int, ...] = (512, 256, 128, 64),
        latent_dim: int = 32,
        num_levels: int = 3,
        codebook_size: int = 256,
        commitment_weight: float = 0.25,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        ema_decay: float = 0.99,
        threshold_ema_dead_code: float = 0.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        from vector_quantize_pytorch import ResidualVQ

        self.encoder = mlp([input_dim, *hidden_dims, latent_dim], dropout)
        self.decoder = mlp([latent_dim, *reversed(hidden_dims), input_dim], dropout)
        self.quantizer = ResidualVQ(
            dim=latent_dim,
            num_quantizers=num_levels,
            codebook_size=codebook_size,
            kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters,
            commitment_weight=commitment_weight,
            decay=ema_decay,
            threshold_ema_dead_code=threshold_ema_dead_code,
        )
        self.num_levels = num_levels
        self.codebook_size = codebook_size

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, D_in) -> x_hat (B, D_in), codes (B, L) long, commitment loss (scalar)."""
        z = self.encoder(x)  # (B, D_e)
        z_q, codes, commit = self.quantizer(z)  # (B, D_e), (B, L), (L,) or (1, L)
        return self.decoder(z_q), codes, commit.sum()

    @torch.no_grad()
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Codes (B, L) and the residual before the last level (B, D_e), for Sinkhorn re-assignment."""
        z = self.encoder(x)  # (B, D_e)
        _, codes, _ = self.quantizer(z)  # (B, L)
        books = self.codebooks()  # (L, K, D_e)
        partial = torch.zeros_like(z)
        for level in range(self.num_levels - 1):
            partial = partial + books[level][codes[:, level]]  # (B, D_e)
        return codes, z - partial

    def codebooks(self) -> Tensor:
        """(L, K, D_e) code vectors."""
        return self.quantizer.codebooks
