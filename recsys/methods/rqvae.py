"""LitRQVAE: semantic IDs for items from their text (TIGER / MiniOneRec step 3a), made unique.

Pipeline: item texts -> frozen text encoder (cached) -> RQ-VAE (vector-quantize-pytorch ResidualVQ,
3 x 256, k-means init, commitment 0.25) -> argmax codes -> Sinkhorn re-assignment of colliding items on
the last level (LC-Rec/MiniOneRec ``generate_indices.py``: epsilon 0.003, 50 iterations, up to 20 rounds)
-> an extra level numbering whatever still collides (TIGER) -> ``sid_index.json`` in the authors' format.

Logged: ``train/loss``, ``train/recon``, ``train/commit``; ``val/collision_rate``, ``val/level<l>_used``
(raw argmax codes); at ``test``: ``test/raw_collision_rate``, ``test/sinkhorn_collision_rate``,
``test/final_collision_rate`` (0 by construction), ``test/level<l>_used``, ``test/num_levels`` and, when
``reference_sid_path`` is given, the same statistics of the reference (e.g. the authors' released) IDs
as ``test/ref_*``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from recsys.data.semantic_ids import SemanticIDs
from recsys.data.sequences import released_sid_path
from recsys.functional.quantize import append_dedup_level, codebook_usage, collision_groups, sinkhorn_assign
from recsys.models.rqvae import RQVAE
from recsys.models.text_encoder import cached_item_embeddings, check_encoder_name
from vlkit.errors import ConfigError, check_file, check_int, check_int_sequence, check_non_negative, check_number, check_positive
from vlkit.checkpoints import record_class

__all__ = ["LitRQVAE"]


class LitRQVAE(L.LightningModule):
    """An RQ-VAE over the items' text embeddings whose codes become unique semantic IDs (see the module).

    Args:
        text_encoder: ``"minilm"`` (packaged all-MiniLM-L6-v2), a Hugging Face path/id, or ``"hash-<D>"``
            (model-free, for tests).
        hidden_dims: encoder MLP widths (authors: 2048..64 for 2560-d Qwen embeddings; ours for 384-d MiniLM).
        latent_dim: quantised latent size (authors: 32).
        num_levels: L, the number of codebooks (authors: 3).
        codebook_size: K, codes per codebook (authors: 256).
        commitment_weight: beta (authors: 0.25).
        kmeans_iters: k-means iterations for the codebook initialisation on the first batch.
        ema_decay: codebook EMA decay (the library's update rule; the authors learn codebooks by gradient).
        threshold_ema_dead_code: re-seed codes whose EMA usage falls below this (0 = off, the authors').
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        sinkhorn_epsilon: entropy weight of the Sinkhorn re-assignment of colliding items on the last level
            (authors: 0.003).
        sinkhorn_iters: Sinkhorn iterations per round (authors: 50).
        sinkhorn_rounds: re-assignment rounds while collisions remain (authors: up to 20; 0 = none).
        sid_path: where to write the unique IDs (default ``<log_dir>/sid_index.json``).
        reference_sid_path: IDs to compare with at test time; ``"auto"`` = the authors' released ones for
            ``amazon18-*`` data (if present), ``None`` = none.
    """

    def __init__(
        self,
        text_encoder: str = "minilm",
        hidden_dims: tuple[int, ...] = (512, 256, 128, 64),
        latent_dim: int = 32,
        num_levels: int = 3,
        codebook_size: int = 256,
        commitment_weight: float = 0.25,
        kmeans_iters: int = 10,
        ema_decay: float = 0.99,
        threshold_ema_dead_code: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        sinkhorn_epsilon: float = 0.003,
        sinkhorn_iters: int = 50,
        sinkhorn_rounds: int = 20,
        sid_path: str | None = None,
        reference_sid_path: str | None = "auto",
    ) -> None:
        super().__init__()
        check_encoder_name(text_encoder)
        check_int_sequence("hidden_dims", hidden_dims, low=1, allow_empty=True)
        check_int("latent_dim", latent_dim, low=1)
        check_int("num_levels", num_levels, low=1, high=7)  # + a dedup level: at most 8 letters <a_..> .. <h_..>
        check_int("codebook_size", codebook_size, low=2)
        check_non_negative("commitment_weight", commitment_weight)
        check_int("kmeans_iters", kmeans_iters, low=1)
        check_number("ema_decay", ema_decay, low=0, high=1, high_open=True)
        check_non_negative("threshold_ema_dead_code", threshold_ema_dead_code)
        check_positive("lr", lr)
        check_non_negative("weight_decay", weight_decay)
        check_positive("sinkhorn_epsilon", sinkhorn_epsilon)
        check_int("sinkhorn_iters", sinkhorn_iters, low=1)
        check_int("sinkhorn_rounds", sinkhorn_rounds, low=0)
        if sid_path is not None and (not isinstance(sid_path, str) or not sid_path.strip()):
            raise ConfigError(f"sid_path must be a file path or None, got {sid_path!r}", argument="sid_path")
        if reference_sid_path not in (None, "auto"):
            check_file("reference_sid_path", reference_sid_path)
        self.save_hyperparameters()
        self.net: RQVAE | None = None
        self.semantic_ids: SemanticIDs | None = None

    # -- set-up ----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Encode the item texts (cached), hand the (N, D) embeddings to the DataModule, build the RQ-VAE."""
        dm = self.trainer.datamodule
        embeddings = cached_item_embeddings(dm.item_texts(), self.hparams.text_encoder)  # (N, D)
        dm.connect(embeddings)
        if self.net is None:
            hp = self.hparams
            self.net = RQVAE(
                embeddings.shape[1], hidden_dims=tuple(hp.hidden_dims), latent_dim=hp.latent_dim,
                num_levels=hp.num_levels, codebook_size=hp.codebook_size, commitment_weight=hp.commitment_weight,
                kmeans_init=True, kmeans_iters=hp.kmeans_iters, ema_decay=hp.ema_decay,
                threshold_ema_dead_code=hp.threshold_ema_dead_code,
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record the writing class, so that loading checks it (``vlkit.checkpoints``)."""
        record_class(checkpoint, self)  # checkpoint["vlkit_class"]: which class wrote it

    def configure_optimizers(self):
        """AdamW on every parameter."""
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # -- steps -----------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        """Reconstruction MSE + commitment loss; logs ``train/loss``, ``train/recon``, ``train/commit``."""
        x = batch["embedding"]  # (B, D)
        x_hat, _, commit = self.net(x)
        recon = torch.nn.functional.mse_loss(x_hat, x)
        loss = recon + commit
        self.log_dict({"train/loss": loss, "train/recon": recon, "train/commit": commit}, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        """Log ``val/recon``, the raw argmax codes' ``val/collision_rate`` and ``val/level<l>_used``."""
        x = batch["embedding"]
        x_hat, codes, _ = self.net(x)
        stats = codebook_usage(codes.cpu())
        self.log("val/recon", torch.nn.functional.mse_loss(x_hat, x))
        self.log("val/collision_rate", stats["collision_rate"], prog_bar=True)
        for level in range(self.hparams.num_levels):
            self.log(f"val/level{level}_used", stats[f"level{level}_used"])

    def test_step(self, batch, batch_idx):
        """Build (and write) the unique IDs of the batch's items and log the report as ``test/*``."""
        ids, report = self.build_semantic_ids(batch["embedding"])
        self.log_dict({f"test/{k}": v for k, v in report.items()})

    def on_fit_end(self) -> None:
        """Build and write the unique IDs of the whole catalogue after training, and print the report."""
        dm = self.trainer.datamodule
        ids, report = self.build_semantic_ids(dm.embeddings.to(self.device))
        print("semantic IDs:", {k: round(v, 4) for k, v in report.items()})

    # -- IDs -------------------------------------------------------------------------------------
    @torch.no_grad()
    def build_semantic_ids(self, embeddings: torch.Tensor) -> tuple[SemanticIDs, dict[str, float]]:
        """Unique IDs for all items (catalogue order) and the collision/usage report; writes ``sid_path``."""
        hp = self.hparams
        was_training = self.net.training
        self.net.eval()
        codes, residual = self.net.encode(embeddings)  # (N, L), (N, D_e)
        codes = codes.clone()
        report: dict[str, float] = {}
        raw = codebook_usage(codes.cpu(), [hp.codebook_size] * hp.num_levels)
        report.update({f"raw_{k}": v for k, v in raw.items() if k in ("collision_rate", "items_in_collisions")})
        report.update({k: v for k, v in raw.items() if k.startswith("level")})
        last_book = self.net.codebooks()[-1]  # (K, D_e)
        for _ in range(hp.sinkhorn_rounds):
            _, counts = collision_groups(codes)
            colliding = counts > 1  # (N,)
            if not colliding.any():
                break
            distances = torch.cdist(residual[colliding], last_book).pow(2)  # (n_colliding, K)
            codes[colliding, -1] = sinkhorn_assign(distances, hp.sinkhorn_epsilon, hp.sinkhorn_iters)
        after = codebook_usage(codes.cpu())
        report["sinkhorn_collision_rate"] = after["collision_rate"]
        unique_codes = append_dedup_level(codes.cpu())
        report["num_levels"] = float(unique_codes.shape[1])
        report["final_collision_rate"] = codebook_usage(unique_codes)["collision_rate"]
        data = self.trainer.datamodule.load()
        sizes = [int(unique_codes[:, l].max()) + 1 for l in range(unique_codes.shape[1])]
        sizes[: hp.num_levels] = [hp.codebook_size] * hp.num_levels
        self.semantic_ids = SemanticIDs(list(data.item_ids), unique_codes, sizes)
        path = hp.sid_path or str(Path(self.trainer.log_dir or ".") / "sid_index.json")
        self.semantic_ids.save(path)
        report.update(self._reference_report(data.item_ids))
        self.net.train(was_training)
        return self.semantic_ids, report

    def _reference_report(self, item_ids: list[str]) -> dict[str, float]:
        ref = self.hparams.reference_sid_path
        if ref == "auto":
            ref = released_sid_path(self.trainer.datamodule.hparams.dataset)
        if not ref:
            return {}
        ref_ids = SemanticIDs.load(ref, item_ids, dedup=False, allow_collisions=True)  # collisions are what we measure
        stats = codebook_usage(ref_ids.codes)
        out = {"ref_collision_rate": stats["collision_rate"], "ref_items_in_collisions": stats["items_in_collisions"]}
        out.update({f"ref_{k}": v for k, v in stats.items() if k.startswith("level")})
        return out
