"""Hugging Face causal LMs and vision-language models for RL post-training (ARES), with LoRA through peft.

``create_language_model(name, ...)`` returns a ``LanguageModelBundle`` (model, tokenizer, processor or
None) over a dict of presets:

- ``"tiny-random-lm"``: a 2-layer Llama with random weights over a character-level tokenizer (~100 ids);
  builds in well under a second, for tests.
- ``"tiny-random-qwen2-vl"``: a tiny Qwen2-VL built from a config (random weights) with a real
  ``Qwen2VLProcessor`` (image processor + the character tokenizer extended with the vision tokens), to
  exercise the multimodal path (pixel values, image grid, ``mm_token_type_ids`` for M-RoPE).
- ``"smollm2-135m-instruct"``: SmolLM2-135M-Instruct converted from the packaged GGUF
  (``vlkit.models.pretrained.smollm2_dir``), offline.
- anything else: a Hugging Face id or local directory (AutoModelForImageTextToText when the config
  has a vision part, else AutoModelForCausalLM).

``LanguageModelSettings`` is the typed group of those choices (model, dtype, LoRA) that ``LitARES`` and
``LitColdStartSFT`` take; ``LanguageModelSettings.create(seed)`` builds the bundle with its adapters.

Sharding with FSDP2 (Lightning's ``ModelParallelStrategy``, from a ``Lit*`` module's ``configure_model``):
``create_language_model(..., empty=True)`` builds on the meta device, ``shard_language_model`` shards it over
the ranks and fills the shards from rank 0 (no rank but rank 0 ever holds the full weights, and rank 0 on CPU),
``data_parallel_mesh`` picks the mesh, ``load_full_state_dict`` loads a full state dict into shards and
``check_same_batch_count`` stops an evaluation whose ranks would run different batch counts (docs/scale-out.md).

Also: ``apply_lora`` (the kit's one peft loader, used by ARES and by recsys's Hugging Face decoders) and
``check_lora_arguments``, ``ensure_pad_token``, the chat prompts of a bundle (``chat_messages``,
``encode_chat_prompts``, ``vision_token_ids``), ``trigger_token_ids`` (reasoning trigger words to token ids,
for HWE detection), ``DEFAULT_TRIGGER_WORDS``.
"""

from __future__ import annotations

import contextlib
import string
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vlkit.errors import ConfigError, check_choice, check_int, check_positive, check_probability

__all__ = [
    "DEFAULT_TRIGGER_WORDS",
    "LanguageModelBundle",
    "LanguageModelSettings",
    "LANGUAGE_MODEL_PRESETS",
    "apply_lora",
    "char_tokenizer",
    "DTYPES",
    "chat_messages",
    "check_language_model_arguments",
    "check_lora_arguments",
    "create_language_model",
    "encode_chat_prompts",
    "ensure_pad_token",
    "trigger_token_ids",
    "vision_token_ids",
    # sharding (FSDP2)
    "check_same_batch_count",
    "data_parallel_mesh",
    "hugging_face_model",
    "is_sharded",
    "load_full_state_dict",
    "pretrained_model",
    "shard_language_model",
]

# Words that often open a reasoning step or a change of course. Our own short list (the authors ship a
# 174-word JSON file that is not reproduced here); pass your own list to override.
DEFAULT_TRIGGER_WORDS = (
    "wait", "but", "however", "alternatively", "perhaps", "maybe", "hmm", "actually", "check", "verify",
    "therefore", "so", "thus", "hence", "first", "then", "next", "now", "let", "since", "because", "recall",
    "reconsider", "realize", "clarify", "suppose", "assume", "instead", "again", "double",
)

_SPECIAL = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_VISION_SPECIAL = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]

# ChatML, with list-of-parts contents (Qwen2-VL style: {"type": "image"} and {"type": "text"}).
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class LanguageModelBundle:
    """A model with what turns text (and images) into its inputs.

    ``processor`` is set for vision-language models (call it with ``text=`` and ``images=``); the
    tokenizer is always set (``processor.tokenizer`` for VLMs) and has a pad token.
    """

    model: nn.Module
    tokenizer: Any
    processor: Any | None = None

    @property
    def is_multimodal(self) -> bool:
        """True for a vision-language model (a processor that takes images)."""
        return self.processor is not None


def char_tokenizer(vision_tokens: bool = False):
    """A character-level ``PreTrainedTokenizerFast`` (printable ASCII + ChatML specials), built offline.

    Each character is one token, so tiny random models have a ~100-token vocabulary.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = _SPECIAL + (_VISION_SPECIAL if vision_tokens else [])
    chars = sorted(set(string.printable))
    vocab = {tok: i for i, tok in enumerate(specials + ["<unk>"] + chars)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token=None,
        unk_token="<unk>",
        additional_special_tokens=specials[1:],
    )
    tok.chat_template = _CHAT_TEMPLATE
    if vision_tokens:
        tok.image_token = "<|image_pad|>"
        tok.video_token = "<|video_pad|>"
    return tok


def ensure_pad_token(tokenizer) -> None:
    """Give a tokenizer without a pad token one (its EOS token), and pad on the left for generation."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("tokenizer has neither a pad token nor an EOS token to use as one")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"


def _tiny_text_config(tok, hidden_size: int, num_layers: int, max_positions: int) -> dict:
    """The decoder settings both tiny random presets share: 4 query heads over 2 key/value heads, an MLP of
    twice the width, and the character tokenizer's vocabulary and special ids."""
    return dict(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )


def _seeded_model(model_class, config, tok, seed: int, empty: bool = False) -> nn.Module:
    """``model_class(config)`` with weights drawn under ``seed`` (the global RNG left as it was), generating
    with the tokenizer's pad and EOS ids; with ``empty`` its weights are on the meta device (no memory, no draw)."""
    if empty:
        with torch.device("meta"):
            model = model_class(config)
    else:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = model_class(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model


def _tiny_random_lm(hidden_size: int = 64, num_layers: int = 2, seed: int = 0, empty: bool = False) -> LanguageModelBundle:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = char_tokenizer()
    config = LlamaConfig(**_tiny_text_config(tok, hidden_size, num_layers, max_positions=1024), tie_word_embeddings=True)
    return LanguageModelBundle(_seeded_model(LlamaForCausalLM, config, tok, seed, empty), tok, None)


def _tiny_random_qwen2_vl(hidden_size: int = 64, num_layers: int = 2, seed: int = 0,
                          empty: bool = False) -> LanguageModelBundle:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tok = char_tokenizer(vision_tokens=True)
    ids = {t: tok.convert_tokens_to_ids(t) for t in _VISION_SPECIAL}
    head_dim = hidden_size // 4
    config = Qwen2VLConfig(
        text_config=dict(
            **_tiny_text_config(tok, hidden_size, num_layers, max_positions=2048),
            # M-RoPE splits head_dim / 2 frequencies into (temporal, height, width) sections
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
            if head_dim == 16
            else None,
        ),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=hidden_size, num_heads=2, mlp_ratio=2,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    if head_dim != 16:
        raise ValueError(f"tiny-random-qwen2-vl needs hidden_size 64 (head_dim 16), got {hidden_size}")
    model = _seeded_model(Qwen2VLForConditionalGeneration, config, tok, seed, empty)
    # small images: 28 px patches x 2 merge -> a 56x56 image is 4 patches, one merged vision token
    image_processor = Qwen2VLImageProcessor(size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112})
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=_CHAT_TEMPLATE,
    )
    return LanguageModelBundle(model, tok, processor)


def _smollm2(dtype: torch.dtype = torch.float32, empty: bool = False) -> LanguageModelBundle:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vlkit.models.pretrained import smollm2_dir

    path = smollm2_dir()
    tok = AutoTokenizer.from_pretrained(path)
    return LanguageModelBundle(pretrained_model(AutoModelForCausalLM, path, dtype, empty), tok, None)


def pretrained_model(auto_class, name, dtype: torch.dtype, empty: bool = False) -> nn.Module:
    """``auto_class.from_pretrained(name, dtype=dtype)``, or with ``empty`` the same architecture on the meta
    device (``from_config``: no weights read, no memory) with the checkpoint's generation config, which a
    sharded build fills from rank 0 (:func:`shard_language_model`)."""
    if not empty:
        return auto_class.from_pretrained(name, dtype=dtype)
    from transformers import AutoConfig, GenerationConfig

    with torch.device("meta"):
        model = auto_class.from_config(AutoConfig.from_pretrained(name), dtype=dtype)
    try:
        model.generation_config = GenerationConfig.from_pretrained(name)
    except OSError:  # no generation_config.json: from_pretrained would derive it from the config, as from_config did
        pass
    return model


LANGUAGE_MODEL_PRESETS = {
    "tiny-random-lm": _tiny_random_lm,
    "tiny-random-qwen2-vl": _tiny_random_qwen2_vl,
    "smollm2-135m-instruct": _smollm2,
}


def _from_pretrained(name: str, dtype: torch.dtype, empty: bool = False) -> LanguageModelBundle:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(name)
    if getattr(config, "vision_config", None) is not None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = AutoProcessor.from_pretrained(name)
        model = pretrained_model(AutoModelForImageTextToText, name, dtype, empty)
        return LanguageModelBundle(model, processor.tokenizer, processor)
    return LanguageModelBundle(
        pretrained_model(AutoModelForCausalLM, name, dtype, empty), AutoTokenizer.from_pretrained(name), None
    )


def create_language_model(name: str, dtype: str = "float32", seed: int = 0, empty: bool = False) -> LanguageModelBundle:
    """Build a preset (``LANGUAGE_MODEL_PRESETS``) or load a Hugging Face id / local directory.

    Args:
        name: preset name, HF hub id or local directory.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (pretrained weights only).
        seed: initialisation seed of the random tiny presets.
        empty: build the architecture on the meta device (no weights read or drawn, no memory), for a sharded
            build that fills it from rank 0 (:func:`shard_language_model`); the tokenizer and processor are real.

    The tokenizer always ends with a pad token and left padding (for batched generation).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string (a preset {sorted(LANGUAGE_MODEL_PRESETS)} or a HF id), got {name!r}")
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    if name.startswith("tiny-random"):
        bundle = LANGUAGE_MODEL_PRESETS[name](seed=seed, empty=empty) if name in LANGUAGE_MODEL_PRESETS else None
        if bundle is None:
            raise ValueError(f"unknown tiny preset {name!r}; presets: {sorted(LANGUAGE_MODEL_PRESETS)}")
    elif name in LANGUAGE_MODEL_PRESETS:
        bundle = LANGUAGE_MODEL_PRESETS[name](dtype=dtypes[dtype], empty=empty)
    else:
        bundle = _from_pretrained(name, dtypes[dtype], empty)
    ensure_pad_token(bundle.tokenizer)
    if bundle.model.generation_config.pad_token_id is None:
        bundle.model.generation_config.pad_token_id = bundle.tokenizer.pad_token_id
    return bundle


def apply_lora(
    model: nn.Module,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.0,
    target_modules: list[str] | str | None = "all-linear",
    trainable_token_indices: dict[str, list[int]] | None = None,
    task_type: str | None = None,
) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters; only the adapters train. The kit's one peft loader.

    Fresh adapters start as the identity (peft initialises every B matrix to zero), so the reference
    policy of RL can be the same model under ``model.disable_adapter()`` (no second copy; see
    ``vlkit.models.policy.ReferencePolicy``).

    Args:
        model: the Hugging Face model to adapt (its weights are frozen).
        r: LoRA rank, an int >= 1.
        alpha: LoRA scale alpha (> 0); the update is scaled by alpha / r.
        dropout: dropout on the adapters' input, in [0, 1).
        target_modules: ``"all-linear"`` adapts every linear layer but the output head (peft's rule); for a
            VLM pass e.g. ``["q_proj", "k_proj", "v_proj", "o_proj"]`` to adapt the language model only.
        trainable_token_indices: e.g. ``{"embed_tokens": new_ids}`` keeps those embedding rows trainable
            while the rest of the embedding stays frozen (tokens added to the vocabulary).
        task_type: peft's (``"CAUSAL_LM"`` gives a ``PeftModelForCausalLM``; None a plain ``PeftModel``).

    Returns:
        the peft model.
    """
    from peft import LoraConfig, get_peft_model

    check_lora_arguments(r, alpha, dropout, target_modules, low=1, prefix="")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, bias="none",
                        trainable_token_indices=trainable_token_indices, task_type=task_type)
    return get_peft_model(model, config)


DTYPES = ("float32", "bfloat16", "float16")  # the weight dtypes create_language_model accepts


def check_language_model_arguments(model_name: Any, dtype: Any) -> None:
    """Check ``create_language_model``'s name and dtype before anything is built (ConfigError): ``model_name``
    a non-empty string (a preset, a Hugging Face id or a directory), ``dtype`` one of ``DTYPES``."""
    if not isinstance(model_name, str) or not model_name.strip():
        raise ConfigError(
            f"model_name must be a non-empty string (a preset or a Hugging Face id / directory), got {model_name!r}",
            argument="model_name",
        )
    check_choice("dtype", dtype, DTYPES)


def check_lora_arguments(
    lora_r: Any, lora_alpha: Any, lora_dropout: Any, lora_target_modules: Any, *, low: int = 0, prefix: str = "lora_"
) -> None:
    """Check LoRA settings before any model is built (ConfigError naming the argument).

    ``lora_r`` is an int >= ``low`` (0 means no LoRA in the ``Lit*`` modules), ``lora_alpha`` > 0,
    ``lora_dropout`` in [0, 1), ``lora_target_modules`` ``"all-linear"``, one module name, a non-empty list of
    names, or None (peft's default for known architectures). ``prefix`` is how the caller names them
    (``lora_r`` in the ``Lit*`` modules, ``r`` in :func:`apply_lora`).
    """
    check_int(f"{prefix}r", lora_r, low=low)
    check_positive(f"{prefix}alpha", lora_alpha)
    check_probability(f"{prefix}dropout", lora_dropout, open_high=True)
    if lora_target_modules is not None and not isinstance(lora_target_modules, str):
        if not lora_target_modules or not all(isinstance(m, str) and m for m in lora_target_modules):
            raise ConfigError(
                f"{prefix}target_modules must be 'all-linear', a module name or a non-empty list of names, "
                f"got {lora_target_modules!r}",
                argument=f"{prefix}target_modules",
            )


@dataclass(frozen=True)
class LanguageModelSettings:
    """Which language model a ``Lit*`` module builds and how LoRA adapts it: the ``language_model`` group of
    ``LitARES`` and ``LitColdStartSFT``, checked when built.

    Args:
        model_name: a preset (``tiny-random-lm``, ``tiny-random-qwen2-vl``, ``smollm2-135m-instruct``) or a
            Hugging Face id / directory.
        dtype: weights dtype (``float32``, ``bfloat16``, ``float16``).
        lora_r: LoRA rank, an int >= 0; 0 trains all weights.
        lora_alpha: LoRA scale alpha, > 0.
        lora_dropout: dropout on the LoRA inputs, in [0, 1).
        lora_target_modules: ``"all-linear"``, a module name or a list of names (peft).
    """

    model_name: str = "tiny-random-lm"
    dtype: str = "float32"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | str | None = "all-linear"

    def __post_init__(self) -> None:
        check_language_model_arguments(self.model_name, self.dtype)
        check_lora_arguments(self.lora_r, self.lora_alpha, self.lora_dropout, self.lora_target_modules)

    def create(self, seed: int = 0, empty: bool = False) -> LanguageModelBundle:
        """The model (``create_language_model``; ``seed`` initialises the random tiny presets), wrapped in fresh
        LoRA adapters (``apply_lora``) when ``lora_r > 0``: ``bundle.model`` is then the peft model. With ``empty``
        the weights, adapters included, are on the meta device (see :func:`shard_language_model`)."""
        bundle = create_language_model(self.model_name, dtype=self.dtype, seed=seed, empty=empty)
        if self.lora_r > 0:
            # an empty build makes its adapters on the meta device too: no memory, and no draw from the RNG
            with torch.device("meta") if empty else contextlib.nullcontext():
                bundle.model = apply_lora(bundle.model, self.lora_r, self.lora_alpha, self.lora_dropout,
                                          self.lora_target_modules)
        return bundle


def chat_messages(prompt: str, with_image: bool = False, system_prompt: str | None = None) -> list[dict]:
    """The chat messages of one user prompt: an optional system message, then the user turn (an image part
    before the text for vision-language models, in the Qwen2-VL list-of-parts format)."""
    content = [{"type": "image"}, {"type": "text", "text": prompt}] if with_image else prompt
    messages = [{"role": "user", "content": content}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def encode_chat_prompts(
    bundle: LanguageModelBundle, prompts: list[str], images: list | None = None, system_prompt: str | None = None
) -> dict[str, Tensor]:
    """Left-padded model inputs (CPU tensors) of user prompts under the bundle's chat template, with the
    generation prompt appended: ``input_ids`` (B, P), ``attention_mask`` (B, P), and for a vision-language
    model with ``images`` (one per prompt) its pixel values, image grid and token types."""
    if images is not None and not bundle.is_multimodal:
        raise ConfigError(
            "the batch holds images but the model has no image processor: model_name must be a vision-language "
            "model for image data",
            argument="model_name",
        )
    chat = bundle.processor if bundle.is_multimodal else bundle.tokenizer
    texts = [chat.apply_chat_template(chat_messages(p, images is not None, system_prompt), tokenize=False,
                                      add_generation_prompt=True) for p in prompts]
    if bundle.is_multimodal:
        kwargs = {} if images is None else {"images": images}
        encoded = bundle.processor(text=texts, return_tensors="pt", padding=True, **kwargs)
    else:
        encoded = bundle.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return {k: v for k, v in encoded.items() if isinstance(v, Tensor)}


def vision_token_ids(bundle: LanguageModelBundle) -> list[int] | None:
    """The vision placeholder tokens of a vision-language model, which must never be sampled (they would
    break the image-token count); None for a text model."""
    if not bundle.is_multimodal:
        return None
    model = bundle.model.get_base_model() if hasattr(bundle.model, "get_base_model") else bundle.model
    ids = [getattr(model.config, k, None) for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                                    "vision_end_token_id")]
    return [int(i) for i in ids if i is not None]


def trigger_token_ids(tokenizer, words: list[str] | tuple[str, ...] = DEFAULT_TRIGGER_WORDS) -> torch.Tensor:
    """Token ids that open a trigger word: the first token of ``word``, `` word`` and ``Word`` variants.

    A word spread over several tokens is represented by its first token (the position whose following
    window is inspected). Returns a sorted (K,) long tensor of unique ids.
    """
    if isinstance(words, str):
        raise TypeError("words must be a list of strings, got a single string")
    ids: set[int] = set()
    for word in words:
        for variant in (word, " " + word, word.capitalize(), " " + word.capitalize()):
            pieces = tokenizer.encode(variant, add_special_tokens=False)
            if pieces:
                ids.add(int(pieces[0]))
    if tokenizer.unk_token_id is not None:
        ids.discard(int(tokenizer.unk_token_id))
    return torch.tensor(sorted(ids), dtype=torch.long)


# ---------------------------------------------------------------------------------------------------- sharding
def hugging_face_model(model: nn.Module) -> nn.Module:
    """The ``transformers`` model inside ``model`` (a peft model's base model; else ``model`` itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def is_sharded(model: nn.Module) -> bool:
    """True when ``model``'s parameters are DTensors (sharded by FSDP2's ``fully_shard``)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def data_parallel_mesh(device_mesh):
    """The 1-D mesh FSDP shards over, from Lightning's ``ModelParallelStrategy`` device mesh (its
    ``"data_parallel"`` dimension), or None without one (a single device, DDP: nothing is sharded).

    Args:
        device_mesh: ``LightningModule.device_mesh`` (a 2-D ``DeviceMesh`` named ``("data_parallel",
            "tensor_parallel")``), a 1-D mesh, or None.

    Raises:
        ConfigError: a tensor-parallel dimension larger than 1 (the kit shards with FSDP only: set the strategy's
            ``tensor_parallel_size`` to 1 and ``data_parallel_size`` to the number of ranks).
    """
    if device_mesh is None:
        return None
    names = device_mesh.mesh_dim_names or ()
    if "tensor_parallel" in names and device_mesh["tensor_parallel"].size() > 1:
        raise ConfigError(
            "the kit shards language models with FSDP only: ModelParallelStrategy needs tensor_parallel_size 1 and "
            f"data_parallel_size = nodes x devices, got tensor_parallel_size {device_mesh['tensor_parallel'].size()}",
            argument="trainer.strategy.init_args.tensor_parallel_size",
        )
    return device_mesh["data_parallel"] if "data_parallel" in names else device_mesh


def shard_language_model(model: nn.Module, mesh, device: torch.device | str, full_model) -> nn.Module:
    """Shard a language model built on the meta device over ``mesh`` with FSDP2, so that no rank but rank 0
    ever holds its full weights, and rank 0 only on CPU, before sharding.

    Steps (the recipe of torchtitan and torchtune; every rank calls this):

    1. ``fully_shard`` each transformer block (the classes the Hugging Face model lists in
       ``_no_split_modules``: decoder layers, vision blocks), then the Hugging Face model itself (embeddings,
       final norm and head, tied weights in one group). The Hugging Face model, not a peft wrapper, is the root:
       ``generate`` calls its forward directly. Each parameter becomes a DTensor split along dim 0 over the ranks;
    2. ``to_empty(device)``: each rank allocates its own shards only;
    3. rank 0 builds the full model on CPU (``full_model()``, the same build without ``empty``: pretrained
       weights are read from disk once, by rank 0) and its state dict is broadcast into the shards
       (``torch.distributed.checkpoint.state_dict.set_model_state_dict`` with ``full_state_dict=True,
       broadcast_from_rank0=True``: each rank keeps its slice); the buffers, also the non-persistent ones that
       a state dict leaves out (rotary frequencies), are broadcast from rank 0 too;
    4. every rank takes rank 0's CPU random state, which rank 0's build advanced (LoRA draws its A matrices
       from it): the run then samples as a one-process run does after the same build;
    5. the Hugging Face model is marked FSDP-managed (``_is_fsdp_managed_module``, ``transformers``' flag), so
       ``generate`` runs with ``synced_gpus``: a rank whose sequences are done keeps stepping until every
       rank's are, since each forward is a collective.

    Args:
        model: the model from ``create_language_model(..., empty=True)`` / ``LanguageModelSettings.create(seed,
            empty=True)`` (peft adapters included), every weight on the meta device.
        mesh: a 1-D ``DeviceMesh`` over the ranks that share the weights (Lightning's
            ``ModelParallelStrategy``: ``device_mesh["data_parallel"]``).
        device: this rank's device (Lightning's ``strategy.root_device``).
        full_model: called on rank 0 only: returns the same model with its real weights (``create(seed)``).

    Returns:
        ``model``, sharded and filled.
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import fully_shard

    if mesh.ndim != 1:
        raise ConfigError(f"mesh must be 1-D (the data-parallel ranks), got {mesh.ndim} dimensions", argument="mesh")
    hf_model = hugging_face_model(model)
    blocks = set(getattr(hf_model, "_no_split_modules", None) or [])
    if not blocks:
        raise ConfigError(f"the model {type(hf_model).__name__} names no transformer block (_no_split_modules) to "
                          f"shard", argument="model_name")
    for module in hf_model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    fully_shard(hf_model, mesh=mesh)
    model.to_empty(device=device)
    rank0 = dist.get_rank() == 0
    full_state, full_buffers = {}, {}
    if rank0:
        with torch.device("cpu"):
            full = full_model()
        full_state, full_buffers = full.state_dict(), dict(full.named_buffers())
    set_model_state_dict(model, full_state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if rank0:
                buffer.copy_(full_buffers[name])
            dist.broadcast(buffer, src=0)
    del full_state, full_buffers
    rng = torch.get_rng_state().to(device)  # on the device: NCCL broadcasts device tensors only
    dist.broadcast(rng, src=0)
    torch.set_rng_state(rng.cpu())
    hf_model._is_fsdp_managed_module = True
    return model


def load_full_state_dict(module: nn.Module, state_dict: dict[str, Tensor], strict: bool = True):
    """``module.load_state_dict(state_dict, strict)`` for a full (unsharded) state dict, also when ``module``'s
    parameters are FSDP2-sharded: each rank then copies its own slice of every tensor
    (``set_model_state_dict`` with ``full_state_dict=True``; every rank passes the full state dict, read on CPU).

    Returns:
        the missing and unexpected keys (``missing_keys``, ``unexpected_keys``), as ``load_state_dict`` does.
    """
    if not is_sharded(module):
        return module.load_state_dict(state_dict, strict=strict)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    return set_model_state_dict(module, state_dict, options=StateDictOptions(full_state_dict=True, strict=strict))


def check_same_batch_count(model: nn.Module, num_batches, stage: str) -> None:
    """Under FSDP each forward is a collective, so every rank must run as many evaluation batches as the others,
    or those with more wait forever for the rest; raise a ConfigError on every rank instead (the kit's
    evaluation samplers do not pad, so a shard may be one row short). A no-op for a model that is not sharded.

    Args:
        model: the model that runs the evaluation.
        num_batches: this rank's batch count (an int, or Lightning's list of counts per dataloader).
        stage: ``"val"`` or ``"test"``, for the message.
    """
    if not is_sharded(model):
        return
    import torch.distributed as dist

    total = int(sum(num_batches)) if isinstance(num_batches, (list, tuple)) else int(num_batches)
    counts: list = [None] * dist.get_world_size()
    dist.all_gather_object(counts, total)
    if len(set(counts)) > 1:
        raise ConfigError(
            f"under FSDP every rank must run the same number of {stage} batches (each forward is a collective), got "
            f"{counts} batches per rank: make the {stage} rows a multiple of ranks x evaluation batch size",
            argument=f"{stage}_size")
