"""RQ-VAE for semantic IDs (TIGER, arXiv 2305.05065; MiniOneRec ``rq/models/rqvae.py``) on
vector-quantize-pytorch's :class:`ResidualVQ`.

x (B, D_in) -> MLP encoder -> z (B, D_e) -> residual quantiser (L levels of K codes) -> z_q -> MLP decoder
-> x_hat (B, D_in). Loss = MSE(x_hat, x) + commitment (the library's codebook update is an EMA).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vlkit.errors import ConfigError, check_int, check_int_sequence, check_non_negative, check_number

__all__ = ["RQVAE", "mlp"]


def mlp(dims: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers through ``dims`` (at least two widths >= 1) with ReLU (and dropout) between them."""
    check_int_sequence("dims", dims, low=1)
    if len(dims) < 2:
        raise ConfigError(f"dims must hold at least an input and an output width, got {list(dims)}", argument="dims")
    check_number("dropout", dropout, low=0, high=1, high_open=True)
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

        check_int("input_dim", input_dim, low=1)
        check_int_sequence("hidden_dims", hidden_dims, low=1, allow_empty=True)
        check_int("latent_dim", latent_dim, low=1)
        check_int("num_levels", num_levels, low=1)
        check_int("codebook_size", codebook_size, low=2)
        check_non_negative("commitment_weight", commitment_weight)
        check_int("kmeans_iters", kmeans_iters, low=1 if kmeans_init else 0)
        check_number("ema_decay", ema_decay, low=0, high=1, high_open=True)
        check_non_negative("threshold_ema_dead_code", threshold_ema_dead_code)
        check_number("dropout", dropout, low=0, high=1, high_open=True)
        self.input_dim = input_dim
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
        self._check_input(x)
        z = self.encoder(x)  # (B, D_e)
        z_q, codes, commit = self.quantizer(z)  # (B, D_e), (B, L), (L,) or (1, L)
        return self.decoder(z_q), codes, commit.sum()

    @torch.no_grad()
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Codes (B, L) and the residual before the last level (B, D_e), for Sinkhorn re-assignment."""
        self._check_input(x)
        z = self.encoder(x)  # (B, D_e)
        _, codes, _ = self.quantizer(z)  # (B, L)
        books = self.codebooks()  # (L, K, D_e)
        partial = torch.zeros_like(z)
        for level in range(self.num_levels - 1):
            partial = partial + books[level][codes[:, level]]  # (B, D_e)
        return codes, z - partial

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.input_dim or x.shape[0] == 0:
            raise ConfigError(f"x must be a non-empty (B, D_in={self.input_dim}) tensor, got {tuple(x.shape)}", argument="x")

    def codebooks(self) -> Tensor:
        """(L, K, D_e) code vectors."""
        return self.quantizer.codebooks
