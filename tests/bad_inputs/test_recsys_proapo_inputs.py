"""Bad inputs to ProAPO (prompts_evo) and the recsys package (MiniOneRec SFT/RL, RQ-VAE, SASRec, data,
recommend_table, ``python -m recsys.experiments``) are refused with ``vlkit.errors.ConfigError`` before any
heavy work, and the message names the argument, what was expected and what came. A few boundary values
that must still be accepted close the file, so the checks are not over-strict.

Every case is cheap: no backbone or language model is built, except one tiny random decoder (hidden 32,
one layer) shared by the recommend_table cases.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlkit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
NAN, INF = float("nan"), float("inf")


# ----------------------------------------------------------------------------------------------------------
# helpers building small inputs on disk
# ----------------------------------------------------------------------------------------------------------
def _write_log(tmp_path: Path, rows: str, items: dict | list | None = None) -> tuple[Path, Path]:
    csv = tmp_path / "log.csv"
    csv.write_text("user,item,timestamp\n" + rows)
    items_path = tmp_path / "items.json"
    items_path.write_text(json.dumps({k: {"title": k.upper()} for k in "abcd"} if items is None else items))
    return csv, items_path


def _write_sids(tmp_path: Path, index: dict) -> Path:
    path = tmp_path / "sid.json"
    path.write_text(json.dumps(index))
    return path


# ----------------------------------------------------------------------------------------------------------
# recsys data: SeqRecDataModule, ItemDataModule, loaders
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_history": 0}, r"max_history must be >= 1, got 0"),
        ({"batch_size": 0}, r"batch_size must be >= 1, got 0"),
        ({"batch_size": 2.5}, r"batch_size must be an integer, got 2.5"),
        ({"eval_batch_size": -4}, r"eval_batch_size must be >= 1, got -4"),
        ({"max_train_samples": 0}, r"max_train_samples must be >= 1, got 0"),
        ({"max_eval_samples": 1.0}, r"max_eval_samples must be an integer or None, got 1.0"),
        ({"num_workers": -1}, r"num_workers must be >= 0, got -1"),
        ({"dataset": "synthetic-2"}, r"'synthetic-N' needs an integer N >= 4 items, got 'synthetic-2'"),
        ({"dataset": "synthtic"}, r"dataset must be .*got 'synthtic' \(closest: synthetic\)"),
        ({"dataset": "csv:only.csv"}, r"'csv:<interactions.csv>:<items.json>' needs both paths"),
    ],
)
def test_seqrec_datamodule_rejects_bad_settings_at_construction(kwargs, match):
    from recsys.data.sequences import SeqRecDataModule

    with pytest.raises(ConfigError, match=match):
        SeqRecDataModule(**kwargs)


def test_csv_whose_users_all_have_one_interaction_has_no_training_samples(tmp_path):
    from recsys.data.sequences import SeqRecDataModule

    csv, items = _write_log(tmp_path, "u,a,1\nv,b,1\nw,c,2\n")
    dm = SeqRecDataModule(f"csv:{csv}:{items}")  # the name is well formed: refused when loaded
    with pytest.raises(ConfigError, match=r"0 training samples.*>= 4 interactions, got 3 users with at most 1"):
        dm.setup("fit")


@pytest.mark.parametrize(
    "rows, items, match",
    [
        ("u,a,1\n", None, None),  # placeholder replaced below (missing column)
        ("u,a,1\nu,b,2\nu,c,3\nu,z,4\n", None, r"unknown item id 'z'"),
        ("u,a,1\nu,b,2\nu,c,3\nu,d,4\n", ["a", "b"], r"items_json must be a non-empty JSON object"),
        ("u,a,1\nu,b,2\nu,c,3\nu,d,4\n", {"a": "A", "b": "B", "c": "C", "d": "D"}, r"item 'a' has no text"),
    ],
)
def test_load_interactions_names_the_bad_file_content(tmp_path, rows, items, match):
    from recsys.data.sequences import load_interactions

    csv, items_path = _write_log(tmp_path, rows, items)
    if match is None:  # a CSV without the timestamp column
        csv.write_text("user,item\nu,a\n")
        match = r"interactions_csv must have columns user,item,timestamp; missing \['timestamp'\]"
    with pytest.raises(ConfigError, match=match):
        load_interactions(csv, items_path)


def test_load_interactions_missing_file(tmp_path):
    from recsys.data.sequences import load_interactions

    with pytest.raises(ConfigError, match=r"interactions_csv must be an existing file, got '.*nope.csv' \(no such file\)"):
        load_interactions(tmp_path / "nope.csv", tmp_path / "items.json")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_items": 3}, r"n_items must be >= 4, got 3"),
        ({"seq_len": 3}, r"seq_len must be >= 4, got 3"),
        ({"n_users": 0}, r"n_users must be >= 1, got 0"),
    ],
)
def test_synthetic_data_arguments(kwargs, match):
    from recsys.data.sequences import synthetic_seqrec

    with pytest.raises(ConfigError, match=match):
        synthetic_seqrec(**kwargs)


def test_amazon_category_without_files(tmp_path):
    from recsys.data.sequences import load_amazon18

    with pytest.raises(ConfigError, match=r"category 'garden': expected items.json under .*known categories"):
        load_amazon18("garden", root=tmp_path)


@pytest.mark.parametrize(
    "embeddings, match",
    [
        (torch.zeros(47, 8), r"embeddings must be a \(N=48, D\) tensor, got \(47, 8\)"),
        (torch.zeros(48), r"embeddings must be a \(N=48, D\) tensor, got \(48,\)"),
        (torch.full((48, 8), NAN), r"embeddings must be finite, got 384 NaN/inf value\(s\)"),
    ],
)
def test_item_datamodule_connect_checks_the_embeddings(embeddings, match):
    from recsys.data.items import ItemDataModule

    dm = ItemDataModule("synthetic")  # 48 items
    with pytest.raises(ConfigError, match=match):
        dm.connect(embeddings)


def test_item_datamodule_batch_size():
    from recsys.data.items import ItemDataModule

    with pytest.raises(ConfigError, match=r"batch_size must be >= 1, got 0"):
        ItemDataModule(batch_size=0)


# ----------------------------------------------------------------------------------------------------------
# semantic IDs
# ----------------------------------------------------------------------------------------------------------
def test_semantic_ids_without_dedup_refuse_colliding_ids(tmp_path):
    from recsys.data.semantic_ids import SemanticIDs

    # items 1 and 2 share <a_0><b_1>: constrained decoding could never tell them apart
    path = _write_sids(tmp_path, {"1": ["<a_0>", "<b_1>"], "2": ["<a_0>", "<b_1>"], "3": ["<a_1>", "<b_0>"]})
    with pytest.raises(ConfigError, match=r"dedup=False must give every item a unique ID, got 2 items sharing IDs \(e.g. \['1', '2'\]\)"):
        SemanticIDs.load(path, ["1", "2", "3"], dedup=False)


@pytest.mark.parametrize(
    "index, match",
    [
        ({"1": ["<a_0>"]}, r"lacks 1 of the 2 items, e.g. \['2'\]"),
        ({"1": ["<a_0>"], "2": ["<b_0>"]}, r"item '2' has malformed tokens \['<b_0>'\]"),
        ({"1": ["<a_0>"], "2": ["<a_1>", "<b_0>"]}, r"IDs must all have the same depth, got depths \[1, 2\]"),
        ({"1": "<a_0>", "2": ["<a_1>"]}, r"item '1' must map to a non-empty list of tokens"),
    ],
)
def test_semantic_id_index_content(tmp_path, index, match):
    from recsys.data.semantic_ids import SemanticIDs

    with pytest.raises(ConfigError, match=match):
        SemanticIDs.load(_write_sids(tmp_path, index), ["1", "2"])


def test_semantic_ids_codes_outside_their_codebook():
    from recsys.data.semantic_ids import SemanticIDs

    with pytest.raises(ConfigError, match=r"codes of level 0 must lie in \[0, 2\), got \[0, 5\]"):
        SemanticIDs(["1", "2"], torch.tensor([[0], [5]]), [2])


def test_random_ids_too_few_for_the_catalogue():
    from recsys.data.semantic_ids import random_semantic_ids

    # 2 codes x 2 levels = 4 distinct IDs for 5 items
    with pytest.raises(ConfigError, match=r"codebook_size\*\*num_levels must be >= the 5 items, got 2\*\*2 = 4"):
        random_semantic_ids([str(i) for i in range(5)], 2, 2)


# ----------------------------------------------------------------------------------------------------------
# MiniOneRec SFT and RL: construction
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"decoder": {"lora_r": -1}}, r"decoder\.lora_r must be >= 0, got -1"),
        ({"decoder": {"lora_r": 4}}, r"decoder\.lora_r must be 0 for decoder\.backbone='scratch'.*got 4"),
        ({"decoder": {"lora_alpha": 0}}, r"decoder\.lora_alpha must be > 0, got 0"),
        ({"optimizer": {"lr": 0.0}}, r"optimizer\.lr must be > 0, got 0.0"),
        ({"optimizer": {"lr": -0.1}}, r"optimizer\.lr must be > 0, got -0.1"),
        ({"optimizer": {"lr": NAN}}, r"optimizer\.lr must be a finite number, got nan"),
        ({"optimizer": {"weight_decay": -0.01}}, r"optimizer\.weight_decay must be >= 0, got -0.01"),
        ({"optimizer": {"warmup_steps": -1}}, r"optimizer\.warmup_steps must be >= 0, got -1"),
        ({"tasks": ("next_title",)}, r"tasks must be a non-empty subset of .*got \['next_title'\]"),
        ({"tasks": "sid_seq"}, r"tasks must be a non-empty subset of .*got 'sid_seq'"),
        ({"tasks": ()}, r"tasks must be a non-empty subset"),
        ({"sid_path": "random-8"}, r"'random-<K>x<L>' needs integers K and L, got 'random-8'"),
        ({"sid_path": "random-1x2"}, r"needs K >= 2 codes and 1 <= L <= 8 levels, got 'random-1x2'"),
        ({"decoder": {"hidden_size": 30, "num_heads": 4}},
         r"decoder\.hidden_size must be divisible by decoder\.num_heads=4, got 30"),
        ({"evaluation": {"val_num_beams": 0}}, r"evaluation\.val_num_beams must be >= 1, got 0"),
        ({"evaluation": {"test_num_beams": 2.0}}, r"evaluation\.test_num_beams must be an integer, got 2.0"),
        ({"evaluation": {"max_exact_rows": 0}}, r"evaluation\.max_exact_rows must be >= 1, got 0"),
        ({"max_prompt_tokens": 0}, r"max_prompt_tokens must be >= 1, got 0"),
        ({"evaluation": {"ks": (10, 0)}}, r"evaluation\.ks\[1\] must be >= 1, got 0"),
        ({"decoder": {"hidden_sise": 32}}, r"decoder setting must be one of .*got 'hidden_sise' \(closest: hidden_size"),
        ({"optimizer": 0.1}, r"optimizer must be a OptimizerSettings object or a dict of its fields, got float"),
    ],
)
def test_minionerec_sft_rejects_bad_hyperparameters(kwargs, match):
    from recsys.methods.minionerec import LitMiniOneRec

    with pytest.raises(ConfigError, match=match):
        LitMiniOneRec(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rl": {"group_size": 1}}, r"rl\.group_size must be >= 2, got 1"),
        ({"rl": {"beta": -0.001}}, r"rl\.beta must be >= 0, got -0.001"),
        ({"rl": {"clip_eps": 0.0}}, r"rl\.clip_eps must be > 0, got 0.0"),
        ({"rl": {"updates_per_rollout": 0}}, r"rl\.updates_per_rollout must be >= 1, got 0"),
        ({"rl": {"rule_weight": INF}}, r"rl\.rule_weight must be a finite number, got inf"),
        ({"rl": {"aggregation": "mean"}}, r"rl\.aggregation must be one of \['token-mean', 'seq-mean-token-mean', 'seq-mean-token-sum'\], got 'mean'"),
        ({"rl": {"max_grad_norm": 0}}, r"rl\.max_grad_norm must be > 0, got 0"),
        ({"decoder": {"lora_r": -2}}, r"decoder\.lora_r must be >= 0, got -2"),  # the SFT checks run for RL too
        ({"optimizer": {"lr": -1e-5}}, r"optimizer\.lr must be > 0, got -1e-05"),
    ],
)
def test_minionerec_rl_rejects_bad_hyperparameters(kwargs, match):
    from recsys.methods.minionerec import LitMiniOneRecRL

    with pytest.raises(ConfigError, match=match):
        LitMiniOneRecRL(**kwargs)


def test_released_ids_need_an_amazon_data_set():
    from recsys.data.sequences import synthetic_seqrec
    from recsys.methods.minionerec import LitMiniOneRec

    with pytest.raises(ConfigError, match=r"sid_path='released' needs an amazon18-\* data set.*got 'synthetic'"):
        LitMiniOneRec(sid_path="released").build(synthetic_seqrec())


def test_missing_init_checkpoint_is_named_before_the_model_is_built(tmp_path):
    from recsys.data.sequences import synthetic_seqrec
    from recsys.methods.minionerec import LitMiniOneRec

    module = LitMiniOneRec(sid_path="random-8x2", init_checkpoint=str(tmp_path / "sft.ckpt"))
    with pytest.raises(ConfigError, match=r"init_checkpoint must be an existing file"):
        module.build(synthetic_seqrec())
    assert module.model is None  # refused before the decoder was made


# ----------------------------------------------------------------------------------------------------------
# recommend_table (the MiniOneRec demo's table) and recommend
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recommender():
    from recsys.data.sequences import synthetic_seqrec
    from recsys.methods.minionerec import LitMiniOneRec

    torch.manual_seed(0)
    data = synthetic_seqrec()
    module = LitMiniOneRec(sid_path="random-8x2", decoder=dict(hidden_size=32, num_layers=1, num_heads=2))
    module.build(data)
    return module.eval(), data


@pytest.mark.parametrize(
    "history, match",
    [
        ([], r"history must be a non-empty list of item ids, got \[\]"),
        (["nope"], r"history must hold catalogue item ids of 'synthetic' \(48 items\), got unknown \['nope'\]"),
        (["1", "999"], r"got unknown \['999'\]"),
        ("1", r"history must be a non-empty list of item ids, got '1'"),
    ],
)
def test_recommend_table_rejects_empty_or_unknown_histories(recommender, history, match):
    from demos.minionerec import recommend_table

    module, data = recommender
    with pytest.raises(ConfigError, match=match):
        recommend_table(module, data, history)


def test_recommend_needs_a_beam(recommender):
    module, data = recommender
    prompt = module.recommendation_prompt(["1"])
    with pytest.raises(ConfigError, match=r"num_beams must be >= 1, got 0"):
        module.recommend([prompt], 0)
    with pytest.raises(ConfigError, match=r"prompts must be a non-empty list of token-id lists"):
        module.recommend([], 5)


# ----------------------------------------------------------------------------------------------------------
# RQ-VAE
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_levels": 0}, r"num_levels must be >= 1 and <= 7, got 0"),
        ({"num_levels": 8}, r"num_levels must be >= 1 and <= 7, got 8"),
        ({"codebook_size": 1}, r"codebook_size must be >= 2, got 1"),
        ({"text_encoder": "hash-x"}, r"'hash-<D>' needs an integer D >= 1, got 'hash-x'"),
        ({"hidden_dims": (64, 0)}, r"hidden_dims\[1\] must be >= 1, got 0"),
        ({"latent_dim": 0}, r"latent_dim must be >= 1, got 0"),
        ({"commitment_weight": -0.25}, r"commitment_weight must be >= 0, got -0.25"),
        ({"ema_decay": 1.0}, r"ema_decay must be >= 0 and < 1, got 1.0"),
        ({"lr": -0.1}, r"lr must be > 0, got -0.1"),
        ({"sinkhorn_epsilon": 0.0}, r"sinkhorn_epsilon must be > 0, got 0.0"),
        ({"sinkhorn_iters": 0}, r"sinkhorn_iters must be >= 1, got 0"),
        ({"reference_sid_path": "/nonexistent/sid.json"}, r"reference_sid_path must be an existing file"),
    ],
)
def test_rqvae_rejects_bad_hyperparameters(kwargs, match):
    from recsys.methods.rqvae import LitRQVAE

    with pytest.raises(ConfigError, match=match):
        LitRQVAE(**kwargs)


def test_rqvae_model_checks_its_input_width():
    from recsys.models.rqvae import RQVAE

    net = RQVAE(8, hidden_dims=(8,), latent_dim=4, num_levels=2, codebook_size=4, kmeans_init=False)
    with pytest.raises(ConfigError, match=r"x must be a non-empty \(B, D_in=8\) tensor, got \(3, 5\)"):
        net(torch.zeros(3, 5))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epsilon": 0.0}, r"epsilon must be > 0, got 0.0"),
        ({"iterations": 0}, r"iterations must be >= 1, got 0"),
        ({"distances": torch.full((2, 3), NAN)}, r"distances must be finite, got 6 NaN/inf"),
    ],
)
def test_sinkhorn_arguments(kwargs, match):
    from recsys.functional.quantize import sinkhorn_assign

    args = {"distances": torch.rand(4, 3), **kwargs}
    with pytest.raises(ConfigError, match=match):
        sinkhorn_assign(**args)


# ----------------------------------------------------------------------------------------------------------
# SASRec
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dropout": 1.0}, r"dropout must be >= 0 and < 1, got 1.0"),
        ({"hidden_size": 30, "num_heads": 4}, r"hidden_size must be divisible by num_heads=4, got 30"),
        ({"max_length": 0}, r"max_length must be >= 1, got 0"),
        ({"ks": []}, r"ks must be a non-empty list of integers, got \[\]"),
        ({"lr": INF}, r"lr must be a finite number, got inf"),
    ],
)
def test_sasrec_rejects_bad_hyperparameters(kwargs, match):
    from recsys.methods.sasrec import LitSASRec

    with pytest.raises(ConfigError, match=match):
        LitSASRec(**kwargs)


def test_sasrec_history_with_an_item_outside_the_catalogue():
    from recsys.models.sasrec import SASRec

    net = SASRec(5, hidden_size=8, num_layers=1, num_heads=2)
    with pytest.raises(ConfigError, match=r"history must hold item indices in \[0, 5\] \(0 = padding\), got \[0, 9\]"):
        net(torch.tensor([[0, 1, 9]]))


# ----------------------------------------------------------------------------------------------------------
# recsys functional pieces
# ----------------------------------------------------------------------------------------------------------
def test_rank_of_a_target_outside_the_scores():
    from recsys.functional.metrics import target_rank_from_scores

    with pytest.raises(ConfigError, match=r"target must hold item indices in \[0, 3\), got \[0, 3\]"):
        target_rank_from_scores(torch.zeros(2, 3), torch.tensor([0, 3]))


def test_ranking_cutoffs_and_reward_inputs():
    from recsys.functional.metrics import ranking_metrics
    from recsys.functional.rewards import hybrid_reward

    with pytest.raises(ConfigError, match=r"ks\[0\] must be >= 1, got 0"):
        ranking_metrics(torch.tensor([0, 1]), (0,))
    with pytest.raises(ConfigError, match=r"hits must be a bool tensor, got torch.float32"):
        hybrid_reward(torch.ones(1, 4))


def test_trie_refuses_duplicate_ids():
    from recsys.models.constrained import SIDTrie

    codes = torch.tensor([[0, 1], [0, 1]])
    level_ids = [torch.tensor([4, 5]), torch.tensor([6, 7])]
    with pytest.raises(ConfigError, match=r"semantic IDs must be unique per item"):
        SIDTrie(codes, level_ids, vocab_size=8, eos_token_id=2)


# ----------------------------------------------------------------------------------------------------------
# python -m recsys.experiments
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stages, match",
    [
        ("bogus", r"--stages must be a comma-separated list of rqvae, sasrec, sft, rl(, [a-z0-9-]+)*, got 'bogus' \(unknown: 'bogus'\)"),
        ("sft,rlhf", r"unknown: 'rlhf'"),
        ("", r"got '' \(unknown: ''\)"),
        ("rl", r"--stages rl needs semantic IDs: add 'rqvae'"),
    ],
)
def test_experiments_main_exits_2_with_one_line(tmp_path, capsys, stages, match):
    import re

    from recsys.experiments import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--stages", stages, "--out", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and re.search(match, err), err
    assert not (tmp_path / "runs").exists()  # nothing was started or written


def test_experiments_module_exits_2_for_an_unknown_stage(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "recsys.experiments", "--stages", "bogus", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert re.fullmatch(r"error: --stages must be a comma-separated list of rqvae, sasrec, sft, rl(, [a-z0-9-]+)*, got 'bogus' \(unknown: 'bogus'\)", lines[0]), lines


# ----------------------------------------------------------------------------------------------------------
# ProAPO
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"shots": 0}, r"shots must be >= 1, got 0"),
        ({"shots": 1.5}, r"shots must be an integer, got 1.5"),
        ({"top_k": 0}, r"top_k must be >= 1, got 0"),
        ({"template_generations": -1}, r"template_generations must be >= 1, got -1"),
        ({"max_templates": -1}, r"max_templates must be >= 0, got -1"),
        ({"heldout_size": -1}, r"heldout_size must be >= 0, got -1"),
        ({"entropy_weight": NAN}, r"entropy_weight must be a finite number, got nan"),
        ({"stage2_top5_weight": INF}, r"stage2_top5_weight must be a finite number or None, got inf"),
        ({"description_samples": 0}, r"description_samples must be >= 1, got 0"),
        ({"batch_size": 0}, r"batch_size must be >= 1, got 0"),
        ({"dataset": "torchvision:CIFAR10"}, r"'torchvision:<Name>' needs a root"),
        ({"dataset": "imagefolder:/nonexistent/images"}, r"dataset must be an existing directory"),
        ({"description_source": "gpt"}, r"description_source must be one of \['llm', 'json', 'templates', 'none'\], got 'gpt'"),
        ({"description_source": "json", "description_file": "/nonexistent/cupl.json"}, r"description_file must be an existing file"),
        ({"type_words": "clothing"}, r"type_words must be a list of words or None, got 'clothing'"),
    ],
)
def test_litproapo_rejects_bad_arguments(kwargs, match):
    import dataclasses

    from prompts_evo.data.features import ProAPODataModule
    from prompts_evo.methods.proapo import LitProAPO
    from prompts_evo.models.search import SearchSettings

    # issue 11: the data settings live in ProAPODataModule, the search settings in LitProAPO's `search` group
    data = {"dataset", "shots", "heldout_size", "test_size", "batch_size"}
    search = {f.name for f in dataclasses.fields(SearchSettings)}
    with pytest.raises(ConfigError, match=match):
        if set(kwargs) <= data:
            ProAPODataModule(**kwargs)
        elif set(kwargs) <= search:
            LitProAPO(search=kwargs)
        else:
            LitProAPO(**kwargs)


def test_prepare_search_names_an_unknown_search_setting_before_loading(monkeypatch):
    import vlkit.models.backbones as backbones

    from prompts_evo.fewshot import prepare_search

    def boom(*a, **k):
        raise AssertionError("the backbone must not be built for bad input")

    monkeypatch.setattr(backbones, "create_backbone", boom)
    with pytest.raises(ConfigError, match=r"search setting must be one of .*got 'top_kk' \(closest: top_k"):
        prepare_search(top_kk=2)
    with pytest.raises(ConfigError, match=r"crossovers must be an integer, got 2.5"):
        prepare_search(crossovers=2.5)


CLASSES = ["dress", "ankle boot"]


def test_prompt_file_with_an_extra_class(tmp_path):
    from prompts_evo.data.prompts import JsonDescriptions, read_class_prompts

    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"dress": ["A dress."], "ankle boot": ["A boot."], "sneaker": ["A shoe."]}))
    match = r"must hold exactly the 2 classes of the data set, got 1 unknown: \['sneaker'\]"
    with pytest.raises(ConfigError, match=match):
        read_class_prompts(path, CLASSES)
    with pytest.raises(ConfigError, match=match):
        JsonDescriptions(path).describe(CLASSES)


def _search(descriptions=None, features=None, labels=None, **kwargs):
    from prompts_evo.models.prompt_embeddings import PromptEmbeddingCache
    from prompts_evo.models.search import ProAPOSearch

    cache = PromptEmbeddingCache(lambda texts: torch.ones(len(texts), 4), "ones")
    features = torch.eye(2, 4) if features is None else features
    labels = torch.arange(2) if labels is None else labels
    templates = ["a photo of a {}.", "a {}.", "art of a {}.", "a picture of a {}."]
    return ProAPOSearch(CLASSES, features, labels, cache, templates, descriptions, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"descriptions": {"dress": ["x"], "ankle boot": ["y"], "sneaker": ["z"]}}, r"descriptions must cover exactly the 2 classes, got 1 unknown: \['sneaker'\]"),
        ({"features": torch.full((2, 4), NAN)}, r"features must be finite, got 8 NaN/inf value\(s\)"),
        ({"features": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}, r"features must hold at least one labelled shot"),
        ({"labels": torch.tensor([0.0, 1.0])}, r"labels must be integer class indices, got dtype torch.float32"),
        ({"logit_scale": 0.0}, r"logit_scale must be > 0, got 0.0"),
        ({"prune_templates": 1}, r"prune_templates must be true or false, got 1"),
        ({"top_k": 5}, r"library \(4 templates\) must hold at least top_k=5"),
    ],
)
def test_proapo_search_checks_its_data(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        _search(**kwargs)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: __import__("prompts_evo.models.descriptions", fromlist=["x"]).LLMDescriptions(max_new_tokens=0),
         r"max_new_tokens must be >= 1, got 0"),
        (lambda: __import__("prompts_evo.methods.proapo", fromlist=["x"]).make_description_source("llm", max_new_tokens=0),
         r"max_new_tokens must be >= 1, got 0"),
        (lambda: __import__("prompts_evo.models.descriptions", fromlist=["x"]).LLMDescriptions(temperature=0.0),
         r"temperature must be > 0, got 0.0"),
        (lambda: __import__("prompts_evo.data.prompts", fromlist=["x"]).expand_type_words(["a {}."], "clothing"),
         r"type_words must be a list of words, got the string 'clothing'"),
        (lambda: __import__("prompts_evo.models.prompt_embeddings", fromlist=["x"]).PromptEmbeddingCache(lambda t: t, "fp", batch_size=0),
         r"batch_size must be >= 1, got 0"),
        (lambda: __import__("prompts_evo.models.prompt_embeddings", fromlist=["x"]).PromptEmbeddingCache(lambda t: t, "fp").embed([]),
         r"texts must be non-empty, got \[\]"),
        (lambda: __import__("prompts_evo.data.features", fromlist=["x"]).load_task_features(None, shots=0),
         r"shots must be >= 1, got 0"),
        (lambda: __import__("prompts_evo.functional.grouping", fromlist=["x"]).kmeans(torch.rand(3, 2), 4),
         r"k must be >= 1 and <= 3, got 4"),
        (lambda: __import__("prompts_evo.functional.operators", fromlist=["x"]).select_top_k(torch.rand(3), 0),
         r"k must be >= 1, got 0"),
        (lambda: __import__("prompts_evo.functional.fitness", fromlist=["x"]).fitness_scores(
            torch.eye(2), torch.tensor([0, 2]), torch.eye(2).unsqueeze(0)),
         r"labels must be integer class indices in \[0, 2\), got torch.int64 in \[0, 2\]"),
    ],
)
def test_proapo_building_blocks(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


# ----------------------------------------------------------------------------------------------------------
# boundary values that must be ACCEPTED
# ----------------------------------------------------------------------------------------------------------
def test_accepts_boundary_data_settings(tmp_path):
    from recsys.data.sequences import SeqRecDataModule, load_interactions

    dm = SeqRecDataModule("synthetic-4", max_history=1, batch_size=1, eval_batch_size=1, max_train_samples=1,
                          max_eval_samples=1, num_workers=0)
    dm.setup("fit")
    assert [len(dm.data.splits[s]) for s in ("train", "val", "test")] == [1, 1, 1]
    assert all(len(s.history) == 1 for s in dm.data.splits["train"])
    # one user with exactly 4 interactions is enough: one training sample (a -> b); the 1-item users drop out
    csv, items = _write_log(tmp_path, "u,a,1\nu,b,2\nu,c,3\nu,d,4\nv,a,1\nw,b,1\n")
    data = load_interactions(csv, items)
    assert [(s.history, s.target) for s in data.splits["train"]] == [(("a",), "b")]


def test_accepts_boundary_hyperparameters():
    from prompts_evo.methods.proapo import LitProAPO
    from recsys.methods.minionerec import LitMiniOneRec, LitMiniOneRecRL
    from recsys.methods.rqvae import LitRQVAE
    from recsys.methods.sasrec import LitSASRec

    sft = LitMiniOneRec(sid_path="random-2x8", decoder=dict(lora_r=0), optimizer=dict(warmup_steps=0, lr=1e-8, weight_decay=0.0),
                        evaluation=dict(max_exact_rows=None, ks=(1,)), tasks=["sid_seq", "title2sid"])
    assert sft.hparams.decoder["lora_r"] == 0 and sft.hparams.evaluation["ks"] == (1,)
    rl = LitMiniOneRecRL(sid_path="random-8x2", rl=dict(group_size=2, beta=0.0, rule_weight=0.0, rank_weight=-1.0,
                                                        aggregation="token-mean", updates_per_rollout=1))
    assert rl.rl.group_size == 2
    rq = LitRQVAE(text_encoder="hash-1", num_levels=7, codebook_size=2, ema_decay=0.0, commitment_weight=0.0,
                  sinkhorn_rounds=0, hidden_dims=(), reference_sid_path=None)
    assert rq.hparams.num_levels == 7
    sas = LitSASRec(dropout=0.0, max_length=1, hidden_size=2, num_heads=2)
    assert sas.hparams.max_length == 1
    # the authors' sign of the similarity term (a negative weight) and a zero stage-2 top-1 weight are legal
    from prompts_evo.data.features import ProAPODataModule

    proapo = LitProAPO(search=dict(top_k=1, template_generations=1, max_templates=0, similarity_weight=-1.0,
                                   stage2_top1_weight=0.0), description_source="none", type_words=[])
    assert ProAPODataModule(shots=1, heldout_size=0, test_size=0).hparams.heldout_size == 0
    assert proapo.hparams.search["similarity_weight"] == -1.0


def test_accepts_unique_ids_without_dedup_and_dedups_colliding_ones(tmp_path):
    from recsys.data.semantic_ids import SemanticIDs

    unique = _write_sids(tmp_path, {"1": ["<a_0>", "<b_1>"], "2": ["<a_0>", "<b_0>"]})
    assert SemanticIDs.load(unique, ["1", "2"], dedup=False).codes.tolist() == [[0, 1], [0, 0]]
    colliding = _write_sids(tmp_path, {"1": ["<a_0>"], "2": ["<a_0>"]})
    # dedup numbers the items sharing an ID in catalogue order: a third level 0, 1
    assert SemanticIDs.load(colliding, ["1", "2"], dedup=True).codes.tolist() == [[0, 0], [0, 1]]
    # a reference index may collide when only its statistics are wanted
    assert SemanticIDs.load(colliding, ["1", "2"], dedup=False, allow_collisions=True).codes.tolist() == [[0], [0]]


def test_accepts_a_one_item_history_in_recommend_table(recommender):
    from demos.minionerec import recommend_table

    module, data = recommender
    rows = recommend_table(module, data, ["1"], k=3)
    assert [r[0] for r in rows] == [1, 2, 3]  # three ranked, valid catalogue items
    assert all(r[1] in data.index for r in rows) and len({r[1] for r in rows}) == 3


def test_accepts_extra_classes_when_asked_and_known_stages(tmp_path):
    from prompts_evo.data.prompts import read_class_prompts
    from recsys.experiments import parse_stages

    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"dress": ["A dress."], "ankle boot": ["A boot."], "sneaker": ["A shoe."]}))
    assert read_class_prompts(path, CLASSES, allow_extra_classes=True) == {"dress": ["A dress."], "ankle boot": ["A boot."]}
    assert parse_stages("rqvae,sft") == ["rqvae", "sft"]
    assert math.isfinite(_search(top_k=4, logit_scale=1e-3).logit_scale)
