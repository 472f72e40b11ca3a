"""ARES' adaptive cold start (AdaCS, arXiv 2510.08457): supervised fine-tuning before RL.

``LitColdStartSFT`` trains a causal LM on the pairs of ``vlkit.data.reasoning.ColdStartSFTDataModule``
(problems whose worked solution is longer the harder the model finds them; the pass rates come from
``vlkit.data.reasoning.estimate_pass_rates``): cross-entropy on the response tokens only, the chat template
applied to the prompt. The RL stage that follows is ``vlkit.methods.ares.LitARES``.
"""

from __future__ import annotations

import dataclasses

import lightning as L
import torch
from torch import Tensor
from torchmetrics.aggregation import MeanMetric

from vlkit.checkpoints import record_class, regrouped_hyperparameters
from vlkit.errors import ConfigError, check_int, check_non_negative, check_positive, check_settings
from vlkit.functional.policy import masked_token_nll
from vlkit.models.language import LanguageModelSettings, chat_messages

__all__ = ["LitColdStartSFT"]


class LitColdStartSFT(L.LightningModule):
    """Supervised fine-tuning on adaptive cold-start pairs (``ColdStartSFTDataModule``): cross-entropy on
    the response tokens only (prompt tokens masked), chat template applied to the prompt.

    Args:
        language_model: the model and its LoRA adapters (:class:`~vlkit.models.language.LanguageModelSettings`:
            ``model_name``, ``dtype``, ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_target_modules``; a
            dict of some of them also works). ``model_name`` must be a causal LM (text models only, e.g.
            ``tiny-random-lm``, ``smollm2-135m-instruct``); ``lora_r`` 0 trains all weights.
        learning_rate: AdamW learning rate, > 0.
        weight_decay: AdamW weight decay, >= 0.
        max_length: truncate prompt + response to this many tokens, an int >= 2.
        system_prompt: optional system message.
        seed: initialisation seed of random tiny presets.
    """

    # it lived in vlkit.methods.ares until the split by job: checkpoints that recorded that path still load
    former_class_paths = ("vlkit.methods.ares.LitColdStartSFT",)

    def __init__(
        self,
        language_model: LanguageModelSettings = LanguageModelSettings(),
        learning_rate: float = 1e-4,
        weight_decay: float = 0.0,
        max_length: int = 512,
        system_prompt: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.language_model = check_settings("language_model", language_model, LanguageModelSettings)
        check_positive("learning_rate", learning_rate)
        check_non_negative("weight_decay", weight_decay)
        check_int("max_length", max_length, low=2)
        check_int("seed", seed)
        language_model = dataclasses.asdict(self.language_model)  # hparams hold plain values (weights_only loads)
        self.save_hyperparameters()
        self.system_prompt = system_prompt
        self.bundle = self.language_model.create(seed)
        if self.bundle.is_multimodal:
            raise ConfigError(
                f"model_name must be a causal LM preset or id (LitColdStartSFT trains text-only pairs), got the "
                f"vision-language model {self.language_model.model_name!r}",
                argument="model_name",
            )
        self.model = self.bundle.model
        # the validation NLL over every rank's pairs (torchmetrics "sum" states reduced at compute; Lightning's
        # sync_dist mean truncates an odd total row count over 2 ranks)
        self.val_loss = MeanMetric()

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Lightning's ``load_from_checkpoint``; a checkpoint written before the ``language_model`` group (flat
        ``model_name``, ``lora_r``, ... hyperparameters) loads too, those values regrouped."""
        groups = regrouped_hyperparameters(checkpoint_path, {"language_model": LanguageModelSettings})
        return super().load_from_checkpoint(checkpoint_path, *args, **{**groups, **kwargs})

    def _batch_tensors(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        """Right-padded (input_ids, attention_mask, labels), each (B, L); labels -100 on prompt and padding."""
        tok = self.bundle.tokenizer
        rows = []
        for prompt, response in zip(batch["prompt"], batch["response"]):
            p = tok.apply_chat_template(chat_messages(prompt, False, self.system_prompt), tokenize=False,
                                        add_generation_prompt=True)
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
        """(mean response-token NLL, number of response tokens) of a batch."""
        input_ids, attention, labels = self._batch_tensors(batch)
        logits = self.model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits  # (B, L, V)
        target = labels[:, 1:]  # (B, L-1) next-token targets
        return masked_token_nll(logits[:, :-1], target), (target != -100).sum()  # logits (B, L-1, V)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        """The response-token NLL, logged as ``train/loss`` (and ``train/response_tokens`` per example)."""
        loss, n = self._loss(batch)
        bs = len(batch["prompt"])
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/response_tokens", n.float() / bs, batch_size=bs)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """The response-token NLL, logged as ``val/loss``."""
        loss, _ = self._loss(batch)
        self.val_loss.update(loss, weight=len(batch["prompt"]))  # the batch mean, weighted by its rows
        self.log("val/loss", self.val_loss, prog_bar=True, batch_size=len(batch["prompt"]))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record the writing class, so that loading checks it (``vlkit.checkpoints``)."""
        record_class(checkpoint, self)  # checkpoint["vlkit_class"]: which class wrote it

    def configure_optimizers(self):
        """AdamW on the trainable parameters (the adapters under LoRA)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay)
