"""SASRec (Kang & McAuley 2018, arXiv 1808.09781): a causal self-attention encoder over the item history;
the last position's state scores every item by a dot product with the (shared) item embeddings."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vlkit.errors import ConfigError, check_int, check_number

__all__ = ["SASRec"]


class SASRec(nn.Module):
    """SASRec: a causal transformer over the item history whose last state scores every item.

    Args:
        num_items: N; item indices are 1..N, 0 is padding.
        hidden_size: D, the width.
        num_layers: transformer blocks.
        num_heads: attention heads (must divide ``hidden_size``).
        dropout: dropout probability in [0, 1).
        max_length: T, the longest history used (older items are cut).
    """

    def __init__(
        self, num_items: int, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 2,
        dropout: float = 0.2, max_length: int = 50,
    ) -> None:
        super().__init__()
        check_int("num_items", num_items, low=1)
        check_int("hidden_size", hidden_size, low=1)
        check_int("num_layers", num_layers, low=1)
        check_int("num_heads", num_heads, low=1)
        check_number("dropout", dropout, low=0, high=1, high_open=True)
        check_int("max_length", max_length, low=1)
        if hidden_size % num_heads:
            raise ConfigError(f"hidden_size must be divisible by num_heads={num_heads}, got {hidden_size}", argument="hidden_size")
        self.num_items = num_items
        self.item_embedding = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(max_length, hidden_size)
        layer = nn.TransformerEncoderLayer(
            hidden_size, num_heads, 4 * hidden_size, dropout, batch_first=True, norm_first=True, activation="gelu"
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.max_length = max_length
        for emb in (self.item_embedding, self.position_embedding):
            nn.init.normal_(emb.weight, std=0.02)  # N(0,1) embeddings make the initial item logits ~N(0, D)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def forward(self, history: Tensor) -> Tensor:
        """history (B, T) left-padded 1-based item indices -> (B, N) scores over items 1..N."""
        if history.dim() != 2 or history.shape[1] == 0 or history.dtype not in (torch.long, torch.int32):
            raise ConfigError(f"history must be a (B, T) integer tensor with T >= 1, got {history.dtype} {tuple(history.shape)}",
                              argument="history")
        if history.numel() and (int(history.min()) < 0 or int(history.max()) > self.num_items):
            raise ConfigError(f"history must hold item indices in [0, {self.num_items}] (0 = padding), got "
                              f"[{int(history.min())}, {int(history.max())}]", argument="history")
        history = history[:, -self.max_length :]  # (B, T)
        B, T = history.shape
        # positions counted from the right, as the authors' histories left-padded to max_length: the most recent item
        # is always at max_length - 1, so a row's scores do not depend on how much its batch is padded (nor on
        # which rows share its batch, e.g. across DDP ranks)
        positions = torch.arange(self.max_length - T, self.max_length, device=history.device).unsqueeze(0).expand(B, T)  # (B, T)
        h = self.dropout(self.item_embedding(history) + self.position_embedding(positions))  # (B, T, D)
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=history.device), diagonal=1)  # (T, T)
        pad_key = (history == 0).unsqueeze(1)  # (B, 1, T)
        eye = torch.eye(T, dtype=torch.bool, device=history.device)  # (T, T)
        # padding keys are hidden, except each position from itself, so no query row is fully masked (no NaN)
        blocked = causal.unsqueeze(0) | (pad_key & ~eye.unsqueeze(0))  # (B, T, T)
        heads = self.encoder.layers[0].self_attn.num_heads
        blocked = blocked.repeat_interleave(heads, dim=0)  # (B * heads, T, T)
        h = self.encoder(h, mask=blocked)
        last = self.norm(h[:, -1])  # (B, D) state after the most recent item
        return last @ self.item_embedding.weight[1:].T  # (B, N)
