"""Bad inputs to the vlkit methods (TFUP, TFUP-T, RePRI, ARES), the data modules and ``fewshot.evaluate``
are refused with a ConfigError that names the argument, what was expected and what came, before any heavy
work starts (each case builds nothing big: the check fires first, which the test's speed also shows).
A few boundary values that must be accepted keep the checks from being over-strict.

Issue 10 names these inputs, all covered below: a negative cache proportion or warm-up epochs, a negative
temperature, ``alpha=NaN``, a negative HWE target, out-of-range LoRA rank / learning rate / entropy window /
quantile, ``max_new_tokens=0``, a NaN image in RePRI, a prompt file with an extra class.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import torch

from vlkit import fewshot
from vlkit.data.episodes import EpisodicDataModule, make_episode
from vlkit.data.fewshot import FewShotDataModule, sample_few_shot
from vlkit.data.prompts import load_class_prompts
from vlkit.data.reasoning import ColdStartSFTDataModule, ReasoningDataModule, generate_arithmetic_problems
from vlkit.data.scenes import FashionScenePool
from vlkit.errors import ConfigError
from vlkit.functional.aepo import shaped_rewards
from vlkit.functional.entropy import response_entropy_threshold, window_entropy
from vlkit.functional.repri import repri_fit
from vlkit.functional.tfup import select_confident_prototypes, tfup_cache_shots, tfup_logits
from vlkit.methods.ares import LitARES
from vlkit.methods.ares_coldstart import LitColdStartSFT
from vlkit.methods.repri import LitRePRI, LitRePRIBaseTraining
from vlkit.methods.tfup import LitTFUP, LitTFUPT

NAN = float("nan")
FASHION = ["T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Prompt files: one matching the Fashion-MNIST classes, one with an extra class 'grey'."""
    root = tmp_path_factory.mktemp("prompts")
    good = {c: [f"a photo of a {c}."] for c in FASHION}
    paths = {"good": root / "good.json", "extra": root / "extra.json", "missing": str(root / "nope.json")}
    paths["good"].write_text(json.dumps(good))
    paths["extra"].write_text(json.dumps({**good, "grey": ["a grey square."]}))
    return paths


@functools.lru_cache(maxsize=None)
def _repri() -> LitRePRI:
    return LitRePRI(backbone="tiny-random", variants=["prototype"], feature_cache=False)


@functools.lru_cache(maxsize=None)
def _ares() -> LitARES:
    return LitARES(language_model=dict(lora_r=0), group_size=2, max_new_tokens=4, kl_coef=0.0)


def _episode(nan_in: str | None = None) -> dict:
    """A 1-shot 32x32 episode from random images; optionally with one NaN pixel in one image tensor."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 8:20] = 1
    batch = make_episode([image], [mask], image, image_size=32)
    if nan_in is not None:
        batch[nan_in].view(-1)[5] = NAN
    return batch


def _features(nan: bool = False) -> dict:
    """Tiny RePRI episode features: B=1, K=1, D=4, 3x3 grid (support fg in the top-left pixel)."""
    g = torch.Generator().manual_seed(0)
    support = torch.randn(1, 1, 4, 3, 3, generator=g)
    if nan:
        support[0, 0, 0, 1, 1] = NAN
    masks = torch.zeros(1, 1, 3, 3, dtype=torch.long)
    masks[0, 0, 0, 0] = 1
    return dict(support_features=support, support_masks=masks, query_features=torch.randn(1, 1, 4, 3, 3, generator=g),
                query_valid=torch.ones(1, 1, 3, 3, dtype=torch.bool), iterations=2)


def _tfup_tensors(nan: bool = False) -> tuple:
    feats = torch.eye(2, 4)  # (N, D)
    if nan:
        feats = feats.clone()
        feats[1, 2] = NAN
    return feats, torch.eye(2, 4), torch.eye(2, 4), torch.eye(2)  # features, class weights, keys, values


# (id, call taking the files fixture, phrase the message must contain)
# fmt: off
CASES = [
    # --- TFUP (LitTFUP) ---------------------------------------------------------------------------------------
    ("tfup-negative-cache-proportion", lambda f: LitTFUP(cache=dict(cache_proportion=-0.1)), r"cache_proportion must be >= 0 and <= 1, got -0.1"),
    ("tfup-cache-proportion-above-1", lambda f: LitTFUP(cache=dict(cache_proportion=1.5)), r"cache_proportion must be .* <= 1, got 1.5"),
    ("tfup-alpha-nan", lambda f: LitTFUP(cache=dict(alpha=NAN)), r"alpha must be a finite number, got nan"),
    ("tfup-alpha-negative", lambda f: LitTFUP(cache=dict(alpha=-0.3)), r"alpha must be >= 0, got -0.3"),
    ("tfup-negative-temperature", lambda f: LitTFUP(cache=dict(temperature=-10.0)), r"temperature must be > 0, got -10.0"),
    ("tfup-zero-temperature", lambda f: LitTFUP(cache=dict(temperature=0.0)), r"temperature must be > 0, got 0.0"),
    ("tfup-negative-beta", lambda f: LitTFUP(cache=dict(beta=-1.0)), r"beta must be >= 0, got -1.0"),
    ("tfup-unknown-mode", lambda f: LitTFUP(mode="tfupp"), r"mode must be one of .* got 'tfupp' \(closest: tfup"),
    ("tfup-zero-min-shots", lambda f: LitTFUP(cache=dict(min_shots=0)), r"min_shots must be >= 1, got 0"),
    ("tfup-fractional-shots", lambda f: LitTFUP(cache=dict(min_shots=2.5)), r"min_shots must be an integer, got 2.5"),
    ("tfup-max-below-min-shots", lambda f: LitTFUP(cache=dict(min_shots=9, max_shots=4)), r"max_shots must be >= 9, got 4"),
    ("tfup-unknown-template-set", lambda f: LitTFUP(template_set="fancy"), r"template_set must be one of .* got 'fancy'"),
    ("tfup-template-without-slot", lambda f: LitTFUP(templates=["a photo"]), r"templates must be .* exactly one '\{\}' slot"),
    ("tfup-missing-prompt-file", lambda f: LitTFUP(class_prompts_file=f["missing"]), r"class_prompts_file must be an existing file"),
    ("tfup-no-prompts", lambda f: LitTFUP(template_set=None), r"template_set=None .* without prompts"),
    # --- TFUP-T (LitTFUPT) ------------------------------------------------------------------------------------
    ("tfupt-negative-warmup-epochs", lambda f: LitTFUPT(warmup_epochs=-1), r"warmup_epochs must be >= 0, got -1"),
    ("tfupt-fractional-warmup-epochs", lambda f: LitTFUPT(warmup_epochs=2.5), r"warmup_epochs must be an integer, got 2.5"),
    ("tfupt-negative-cache-proportion", lambda f: LitTFUPT(cache=dict(cache_proportion=-0.3)), r"cache_proportion must be >= 0"),
    ("tfupt-zero-lr", lambda f: LitTFUPT(lr=0.0), r"lr must be > 0, got 0.0"),
    ("tfupt-negative-lr", lambda f: LitTFUPT(lr=-0.1), r"lr must be > 0, got -0.1"),
    ("tfupt-negative-temperature", lambda f: LitTFUPT(cache=dict(temperature=-1.0)), r"temperature must be > 0, got -1.0"),
    ("tfupt-alpha-nan", lambda f: LitTFUPT(cache=dict(alpha=NAN)), r"alpha must be a finite number, got nan"),
    ("tfupt-adapter-ratio", lambda f: LitTFUPT(adapter_ratio=1.5), r"adapter_ratio must be >= 0 and <= 1, got 1.5"),
    ("tfupt-zero-text-ratio", lambda f: LitTFUPT(text_ratio=0.0), r"text_ratio must be > 0 and <= 1, got 0.0"),
    ("tfupt-confidence-threshold-1", lambda f: LitTFUPT(confidence_threshold=1.0), r"confidence_threshold must be >= 0 and < 1, got 1.0"),
    ("tfupt-zero-adapter-reduction", lambda f: LitTFUPT(adapter_reduction=0), r"adapter_reduction must be >= 1, got 0"),
    ("tfupt-negative-weight-decay", lambda f: LitTFUPT(weight_decay=-0.1), r"weight_decay must be >= 0, got -0.1"),
    ("tfupt-zero-adam-eps", lambda f: LitTFUPT(adam_eps=0.0), r"adam_eps must be > 0, got 0.0"),
    ("tfupt-negative-marginal-weight", lambda f: LitTFUPT(marginal_weight=-0.3), r"marginal_weight must be >= 0"),
    ("tfupt-training-proportion", lambda f: LitTFUPT(training_proportion=2.0), r"training_proportion must be >= 0 and <= 1, got 2.0"),
    ("tfupt-unknown-selection", lambda f: LitTFUPT(selection="best"), r"selection must be one of .* got 'best'"),
    # --- TFUP functional ------------------------------------------------------------------------------------
    ("tfup-logits-nan-features", lambda f: tfup_logits(*_tfup_tensors(nan=True)), r"test_features must be finite"),
    ("tfup-logits-alpha-nan", lambda f: tfup_logits(*_tfup_tensors(), alpha=NAN), r"alpha must be a finite number, got nan"),
    ("tfup-logits-zero-chunk", lambda f: tfup_logits(*_tfup_tensors(), chunk_size=0), r"chunk_size must be >= 1, got 0"),
    ("tfup-cache-shots-negative-proportion", lambda f: tfup_cache_shots(100, 10, proportion=-0.3), r"proportion must be >= 0"),
    ("tfup-select-zero-shots", lambda f: select_confident_prototypes(torch.full((4, 2), 0.5), 0), r"shots must be >= 1, got 0"),
    # --- RePRI ------------------------------------------------------------------------------------------------
    ("repri-nan-support-image", lambda f: _repri().segment(_episode("support_images")), r"support_images must be finite, got 1 NaN"),
    ("repri-nan-query-image", lambda f: _repri().segment(_episode("query_image")), r"query_image must be finite, got 1 NaN"),
    ("repri-nan-user-image", lambda f: make_episode([np.full((8, 8, 3), NAN)], [np.ones((8, 8))], np.zeros((8, 8, 3))),
     r"support_images\[0\] must be finite, got 192 NaN"),
    ("repri-fit-nan-features", lambda f: repri_fit(**_features(nan=True)), r"support_features must be finite, got 1 NaN"),
    ("repri-fit-oracle-proportion", lambda f: repri_fit(**_features(), oracle_proportion=torch.tensor([1.5])),
     r"oracle_proportion must lie in \[0, 1\]"),
    ("repri-negative-temperature", lambda f: LitRePRI(backbone="tiny-random", temperature=-20.0), r"temperature must be > 0, got -20.0"),
    ("repri-zero-lr", lambda f: LitRePRI(backbone="tiny-random", lr=0.0), r"lr must be > 0, got 0.0"),
    ("repri-zero-iterations", lambda f: LitRePRI(backbone="tiny-random", iterations=0), r"iterations must be >= 1, got 0"),
    ("repri-fractional-iterations", lambda f: LitRePRI(backbone="tiny-random", iterations=2.5), r"iterations must be an integer"),
    ("repri-negative-kl-weight", lambda f: LitRePRI(backbone="tiny-random", kl_weight=-1.0), r"kl_weight must be >= 0, got -1.0"),
    ("repri-negative-oracle-weight", lambda f: LitRePRI(backbone="tiny-random", oracle_weights=[1.0, -1.0, 0.1]), r"oracle_weights must be >= 0, got -1.0"),
    ("repri-zero-update-step", lambda f: LitRePRI(backbone="tiny-random", proportion_update_at=[0]), r"proportion_update_at must be >= 1, got 0"),
    ("repri-zero-encode-batch", lambda f: LitRePRI(backbone="tiny-random", encode_batch_size=0), r"encode_batch_size must be >= 1, got 0"),
    ("repri-no-variants", lambda f: LitRePRI(backbone="tiny-random", variants=[]), r"variants must be a non-empty subset"),
    ("repri-unknown-protocol", lambda f: LitRePRI(backbone="tiny-random", protocol="loose"), r"protocol must be one of .* got 'loose'"),
    ("repri-base-label-smoothing", lambda f: LitRePRIBaseTraining(backbone="tiny-random", label_smoothing=1.0), r"label_smoothing must be >= 0 and < 1, got 1.0"),
    ("repri-base-zero-momentum", lambda f: LitRePRIBaseTraining(backbone="tiny-random", momentum=0.0), r"momentum must be > 0 and < 1, got 0.0"),
    # --- ARES -------------------------------------------------------------------------------------------------
    ("ares-negative-lora-rank", lambda f: LitARES(language_model=dict(lora_r=-1)), r"lora_r must be >= 0, got -1"),
    ("ares-fractional-lora-rank", lambda f: LitARES(language_model=dict(lora_r=4.5)), r"lora_r must be an integer, got 4.5"),
    ("ares-zero-learning-rate", lambda f: LitARES(learning_rate=0.0), r"learning_rate must be > 0, got 0.0"),
    ("ares-negative-learning-rate", lambda f: LitARES(learning_rate=-1e-6), r"learning_rate must be > 0, got -1e-06"),
    ("ares-zero-entropy-window", lambda f: LitARES(entropy_window=0), r"entropy_window must be >= 1, got 0"),
    ("ares-quantile-above-1", lambda f: LitARES(threshold_quantile=1.5), r"threshold_quantile must be >= 0 and <= 1, got 1.5"),
    ("ares-negative-decay", lambda f: LitARES(threshold_decay=-0.1), r"threshold_decay must be >= 0 and <= 1, got -0.1"),
    ("ares-alpha-nan", lambda f: LitARES(alpha_init=NAN), r"alpha_init must be a finite number, got nan"),
    ("ares-max-new-tokens-0", lambda f: LitARES(max_new_tokens=0), r"max_new_tokens must be >= 1, got 0"),
    ("ares-negative-temperature", lambda f: LitARES(temperature=-1.0), r"temperature must be > 0, got -1.0"),
    ("ares-zero-top-p", lambda f: LitARES(top_p=0.0), r"top_p must be > 0 and <= 1, got 0.0"),
    ("ares-clip-low-1", lambda f: LitARES(clip_low=1.0), r"clip_low must be >= 0 and < 1, got 1.0"),
    ("ares-dual-clip-1", lambda f: LitARES(dual_clip=1.0), r"dual_clip must be > 1, got 1.0"),
    ("ares-unknown-kl-estimator", lambda f: LitARES(kl_estimator="k4"), r"kl_estimator must be one of .* got 'k4'"),
    ("ares-lora-dropout-1", lambda f: LitARES(language_model=dict(lora_dropout=1.0)), r"lora_dropout must be >= 0 and < 1, got 1.0"),
    ("ares-unknown-dtype", lambda f: LitARES(language_model=dict(dtype="float8")), r"dtype must be one of .* got 'float8'"),
    ("ares-trigger-words-string", lambda f: LitARES(trigger_words="wait"), r"trigger_words must be None, \['default'\] or a non-empty list"),
    ("ares-zero-kl-interval", lambda f: LitARES(kl_update_interval=0), r"kl_update_interval must be >= 1, got 0"),
    ("ares-generate-max-new-tokens-0", lambda f: _ares().generate(["What is 1 + 1?"], max_new_tokens=0), r"max_new_tokens must be >= 1, got 0"),
    ("ares-sft-max-length", lambda f: LitColdStartSFT(max_length=1), r"max_length must be >= 2, got 1"),
    ("ares-sft-negative-lora-rank", lambda f: LitColdStartSFT(language_model=dict(lora_r=-2)), r"lora_r must be >= 0, got -2"),
    ("ares-negative-hwe-target", lambda f: shaped_rewards(torch.ones(2), torch.zeros(2), torch.tensor([-1.0, 0.0, 0.0]),
                                                          torch.zeros(2, dtype=torch.long), torch.full((3,), 0.5)),
     r"targets must be finite and >= 0.0, got \[-1.0, 0.0, 0.0\]"),
    ("ares-reward-alpha-nan", lambda f: shaped_rewards(torch.ones(2), torch.zeros(2), torch.zeros(3),
                                                       torch.zeros(2, dtype=torch.long), torch.full((3,), NAN)),
     r"alpha must be finite and in \[0.0, 2.0\], got \[nan, nan, nan\]"),
    ("ares-window-entropy-0", lambda f: window_entropy(torch.ones(1, 3), torch.ones(1, 3), window=0), r"window must be >= 1, got 0"),
    ("ares-response-quantile", lambda f: response_entropy_threshold(torch.ones(1, 3), torch.ones(1, 3), 1.5), r"quantile must be >= 0 and <= 1, got 1.5"),
    # --- data modules -----------------------------------------------------------------------------------------
    ("fewshot-dm-negative-shots", lambda f: FewShotDataModule(shots=-1), r"shots must be >= 0, got -1"),
    ("fewshot-dm-zero-subset", lambda f: FewShotDataModule(subset_size=0), r"subset_size must be >= 1, got 0"),
    ("fewshot-dm-unknown-split", lambda f: FewShotDataModule(eval_split="validation"), r"eval_split must be one of \['train', 'test'\], got 'validation'"),
    ("fewshot-dm-unknown-labelled-split", lambda f: FewShotDataModule(shots=2, labelled_split="val"), r"labelled_split must be one of"),
    ("fewshot-dm-zero-batch", lambda f: FewShotDataModule(batch_size=0), r"batch_size must be >= 1, got 0"),
    ("fewshot-dm-negative-views", lambda f: FewShotDataModule(augment_views=-1), r"augment_views must be >= 0, got -1"),
    ("fewshot-dm-unknown-dataset", lambda f: FewShotDataModule(dataset="mnist"), r"dataset must be 'fashion-mnist', .* got 'mnist'"),
    ("fewshot-sample-zero-shots", lambda f: sample_few_shot(torch.tensor([0, 0, 1, 1]), 0, 1), r"shots must be >= 1, got 0"),
    ("prompt-file-extra-class", lambda f: load_class_prompts(f["extra"], FASHION), r"must hold only the dataset's classes, got extra classes \['grey'\]"),
    ("episodes-unknown-fold", lambda f: EpisodicDataModule(folds=[7]), r"folds\[0\] must be >= 0 and <= 4, got 7"),
    ("episodes-repeated-fold", lambda f: EpisodicDataModule(folds=[1, 1]), r"folds must be distinct, got \[1, 1\]"),
    ("episodes-zero-episodes", lambda f: EpisodicDataModule(episodes_per_fold=0), r"episodes_per_fold must be >= 1, got 0"),
    ("episodes-tiny-image-size", lambda f: EpisodicDataModule(image_size=0), r"image_size must be >= 8, got 0"),
    ("episodes-negative-workers", lambda f: EpisodicDataModule(num_workers=-1), r"num_workers must be >= 0, got -1"),
    ("episodes-shots-above-max", lambda f: EpisodicDataModule(shots=3, max_shots=2), r"shots must be in 1..max_shots=2, got 3"),
    ("episodes-zero-scenes", lambda f: FashionScenePool("test", num_scenes=0), r"num_scenes must be >= 1, got 0"),
    ("reasoning-zero-prompts-per-batch", lambda f: ReasoningDataModule(prompts_per_batch=0), r"prompts_per_batch must be >= 1, got 0"),
    ("reasoning-train-below-batch", lambda f: ReasoningDataModule(train_size=2, prompts_per_batch=4), r"train_size must be >= prompts_per_batch=4 .* got 2"),
    ("reasoning-unknown-level", lambda f: ReasoningDataModule(levels=[6]), r"levels must be a non-empty subset of \[1, 2, 3, 4, 5\], got \[6\]"),
    ("reasoning-missing-problems-file", lambda f: ReasoningDataModule(problems_path=f["missing"]), r"problems_path must be an existing file"),
    ("reasoning-negative-n", lambda f: generate_arithmetic_problems(-1), r"n must be >= 0, got -1"),
    ("coldstart-nan-pass-rate", lambda f: ColdStartSFTDataModule(level_pass_rates=[1.0, NAN, 0.5, 0.25, 0.0]), r"level_pass_rates must be 5 values in \[0, 1\]"),
    ("coldstart-zero-val-size", lambda f: ColdStartSFTDataModule(val_size=0), r"val_size must be >= 1, got 0"),
    # --- fewshot.evaluate -------------------------------------------------------------------------------------
    ("evaluate-unknown-method", lambda f: fewshot.evaluate(method="tfupp"), r"method must be one of .* got 'tfupp' \(closest: tfup"),
    ("evaluate-negative-shots", lambda f: fewshot.evaluate(shots=-1), r"shots must be >= 0, got -1"),
    ("evaluate-no-seeds", lambda f: fewshot.evaluate(seeds=[]), r"seeds must be a non-empty list of ints, got \[\]"),
    ("evaluate-fractional-seed", lambda f: fewshot.evaluate(seeds=[1.5]), r"seeds must be an integer, got 1.5"),
    ("evaluate-zero-subset", lambda f: fewshot.evaluate(subset_size=0), r"subset_size must be >= 1, got 0"),
    ("evaluate-zero-epochs", lambda f: fewshot.evaluate(method="tfup-t", max_epochs=0), r"max_epochs must be >= 1, got 0"),
    ("evaluate-unknown-selection", lambda f: fewshot.evaluate(method="tfup-t", selection="best"), r"selection must be one of .* got 'best'"),
    ("evaluate-negative-views", lambda f: fewshot.evaluate(method="tfup-t", augment_views=-1), r"augment_views must be >= 0, got -1"),
    ("evaluate-missing-prompt-file", lambda f: fewshot.evaluate(class_prompts_file=f["missing"]), r"class_prompts_file must be an existing file"),
    ("evaluate-no-prompts", lambda f: fewshot.evaluate(template_set=None), r"template_set=None without a class_prompts_file"),
    ("evaluate-prompt-file-extra-class", lambda f: fewshot.evaluate(backbone="tiny-random", template_set=None,
                                                                    class_prompts_file=str(f["extra"])),
     r"got extra classes \['grey'\]"),
]
# fmt: on


@pytest.mark.parametrize(("call", "match"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_config_error(call, match, files):
    with pytest.raises(ConfigError, match=match) as info:
        call(files)
    assert isinstance(info.value, ValueError)  # the kit's error is a ValueError: old `except ValueError` still works


def test_case_ids_are_unique_and_cover_the_issue():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 50
    named_in_issue = [
        "tfup-negative-cache-proportion", "tfupt-negative-warmup-epochs", "tfup-negative-temperature", "tfup-alpha-nan",
        "ares-alpha-nan", "ares-negative-hwe-target", "ares-negative-lora-rank", "ares-zero-learning-rate",
        "tfupt-zero-lr", "ares-zero-entropy-window", "ares-quantile-above-1", "ares-max-new-tokens-0",
        "ares-generate-max-new-tokens-0", "repri-nan-support-image", "prompt-file-extra-class",
    ]  # fmt: skip
    assert set(named_in_issue) <= set(ids)


def test_error_names_the_argument_for_the_cli():
    with pytest.raises(ConfigError) as info:
        LitTFUP(cache=dict(temperature=-1.0))
    assert info.value.argument == "temperature"
    with pytest.raises(ConfigError) as info:
        LitARES(entropy_window=0)
    assert info.value.argument == "entropy_window"


# --------------------------------------------------------------------------------------- accepted boundaries


def test_tfup_accepts_its_bounds():
    # alpha = beta = 0 (no cache influence), proportion at both ends, K bounds equal, temperature tiny but > 0
    for cache in (dict(alpha=0.0, beta=0.0), dict(cache_proportion=0.0), dict(cache_proportion=1.0),
                  dict(min_shots=1, max_shots=1), dict(temperature=1e-6)):
        model = LitTFUP(cache=cache)
        assert all(model.hparams.cache[k] == v for k, v in cache.items())
    kwargs = dict(template_set="none", templates=["a {}."])
    model = LitTFUP(**kwargs)
    assert all(model.hparams[k] == v for k, v in kwargs.items())
    model = LitTFUPT(warmup_epochs=0, adapter_ratio=0.0, text_ratio=1.0, confidence_threshold=0.0, training_proportion=1.0,
                     weight_decay=0.0, marginal_weight=0.0)
    assert model.hparams.warmup_epochs == 0 and model.hparams.text_ratio == 1.0


def test_tfup_functional_bounds_give_the_formula_values():
    # K = min(high, max(low, floor(p N / C))): p = 0 -> low = 9; p = 1 on N=100, C=10 -> floor(10) = 10
    assert tfup_cache_shots(100, 10, proportion=0.0) == 9
    assert tfup_cache_shots(100, 10, proportion=1.0) == 10
    # beta = 0: every cache entry weighs exp(0) = 1, so the cache adds alpha * (count of class-c keys) = alpha
    feats, weights, keys, values = _tfup_tensors()
    out = tfup_logits(feats, weights, keys, values, alpha=0.5, beta=0.0, logit_scale=1.0, similarity="cosine")
    assert torch.allclose(out, torch.eye(2) + 0.5)


def test_ares_accepts_its_bounds_and_generate_keeps_a_given_budget():
    model = LitARES(language_model=dict(lora_r=0), group_size=2, max_new_tokens=1, kl_coef=0.0, threshold_quantile=1.0,
                    threshold_decay=0.0, alpha_init=2.0, top_p=1.0, eval_temperature=0.0, clip_low=0.0, dual_clip=None, alpha_step=0.0)
    assert float(model.entropy_alpha[0]) == 2.0
    # max_new_tokens=1 is honoured (before, a falsy budget fell back to the default of 256)
    roll = _ares().generate(["What is 1 + 1?"], max_new_tokens=1, temperature=0.0)
    assert roll["completion_ids"].shape[1] == 1


def test_reward_bounds_give_the_formula_values():
    # target 0, alpha 2 (the upper clip), correct easy answer without HWE tokens: delta = 0 <= m = 1, so the
    # entropy penalty is 0 and the reward is the accuracy, 1
    reward = shaped_rewards(torch.ones(2), torch.zeros(2), torch.zeros(3), torch.zeros(2, dtype=torch.long),
                            torch.full((3,), 2.0))
    assert reward.tolist() == [1.0, 1.0]


def test_repri_accepts_its_bounds():
    model = LitRePRI(backbone="tiny-random", ce_weight=0.0, kl_weight=0.0, entropy_weight=0.0, kl_boost=0.0,
                     proportion_update_at=[], oracle_weights=[0.0, 0.0, 0.0], iterations=1, variants=["repri"])
    assert model.hparams.iterations == 1
    # the oracle proportion at exactly 0 and 1; one iteration = no SGD step, so the prototype stays the
    # support's foreground feature (masked mean of the one fg pixel)
    feats = _features()
    res = repri_fit(**{**feats, "iterations": 1}, oracle_proportion=torch.tensor([1.0]))
    assert torch.allclose(res.prototype[0], feats["support_features"][0, 0, :, 0, 0], atol=1e-6)
    assert res.proportion_final.tolist() == [1.0]
    res = repri_fit(**feats, oracle_proportion=torch.tensor([0.0]))
    assert res.proportion_final.tolist() == [0.0]
    # a clean episode goes through the image checks and gives a finite (B, 1, h, w) logit map
    logits = _repri().segment(_episode())["logits_prototype"]
    assert logits.shape[:2] == (1, 1) and torch.isfinite(logits).all()


def test_data_modules_accept_their_bounds(files):
    dm = FewShotDataModule(subset_size=1, shots=0, augment_views=0, batch_size=1, eval_batch_size=1)
    assert len(dm.classnames) == 10
    assert list(load_class_prompts(files["good"], FASHION)) == FASHION
    dm = EpisodicDataModule(folds=[4], shots=10, max_shots=10, image_size=8, num_workers=0)
    assert dm.folds == [4] and dm.shots == 10
    assert ReasoningDataModule(train_size=4, prompts_per_batch=4).hparams.train_size == 4
    assert ReasoningDataModule(train_size=0, val_size=0, test_size=0).hparams.train_size == 0  # eval-only runs
    problems = generate_arithmetic_problems(0)
    assert problems == []
    assert not math.isnan(ColdStartSFTDataModule(level_pass_rates=[1.0, 1.0, 0.0, 0.0, 0.0]).hparams.level_pass_rates[0])
