"""The generative recommender's causal LMs: a small decoder from scratch, or a pretrained Hugging Face
causal LM (optionally with LoRA through the kit's one peft loader, ``vlkit.models.language.apply_lora``)."""

from __future__ import annotations

import contextlib

import torch

from vlkit.errors import ConfigError, check_int, check_number, check_positive
from vlkit.models.language import apply_lora, pretrained_model

__all__ = ["build_scratch_decoder", "load_hf_causal_lm"]


def build_scratch_decoder(
    vocab_size: int, hidden_size: int = 128, num_layers: int = 2, num_heads: int = 4, max_positions: int = 1024,
    pad_token_id: int = 0, bos_token_id: int = 1, eos_token_id: int = 2,
):
    """A small Llama-architecture decoder with random weights (TIGER-sized by default).

    The FFN is 4 x ``hidden_size`` wide, input and output embeddings are tied; the special-token ids
    default to :func:`recsys.models.tokenizers.build_word_tokenizer`'s.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    for name, value in (("vocab_size", vocab_size), ("hidden_size", hidden_size), ("num_layers", num_layers),
                        ("num_heads", num_heads), ("max_positions", max_positions)):
        check_int(name, value, low=1)
    if hidden_size % num_heads:
        raise ConfigError(f"hidden_size must be divisible by num_heads={num_heads}, got {hidden_size}", argument="hidden_size")
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_positions, tie_word_embeddings=True,
        pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
    )
    return LlamaForCausalLM(config)


def load_hf_causal_lm(
    path: str, vocab_size: int, new_token_ids: list[int], lora_r: int = 0, lora_alpha: int = 16,
    lora_dropout: float = 0.05, target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
    empty: bool = False,
):
    """A pretrained causal LM with its embeddings resized to ``vocab_size``.

    With ``lora_r > 0`` the backbone is frozen and wrapped by peft LoRA (``apply_lora``); the rows of the
    new ID tokens stay trainable through peft's ``trainable_token_indices`` (the rest of the embedding
    stays frozen). With ``empty`` the same model is made on the meta device, no weights read
    (``vlkit.models.language.pretrained_model``), for a sharded build that rank 0 fills.
    """
    from transformers import AutoModelForCausalLM

    check_int("vocab_size", vocab_size, low=1)
    check_int("lora_r", lora_r, low=0)
    check_positive("lora_alpha", lora_alpha)
    check_number("lora_dropout", lora_dropout, low=0, high=1, high_open=True)
    if lora_r > 0 and (isinstance(target_modules, str) or not target_modules):
        raise ConfigError(f"target_modules must be a non-empty list of module names, got {target_modules!r}",
                          argument="target_modules")
    model = pretrained_model(AutoModelForCausalLM, path, torch.float32, empty)
    with torch.device("meta") if empty else contextlib.nullcontext():  # new rows and adapters: no memory, no draw
        model.resize_token_embeddings(vocab_size, mean_resizing=not empty)  # the mean of meta rows is not computable
        if lora_r > 0:
            model = apply_lora(model, lora_r, lora_alpha, lora_dropout, list(target_modules),
                               trainable_token_indices={"embed_tokens": list(new_token_ids)}, task_type="CAUSAL_LM")
    return model
