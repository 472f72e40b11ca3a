"""ARES sharded with FSDP2 on 2 CPU processes (gloo): Lightning's ``ModelParallelStrategy``, with
``LitARES.configure_model`` building the tiny random LM + LoRA on the meta device, sharding it (``fully_shard``
per decoder layer, then the model) and filling the shards from rank 0 (``shard_language_model``).

Why the 2-rank run must equal the 1-process run exactly: the training set is one prompt, which the distributed
sampler gives to both ranks (it pads the shard), and every rank starts fit from seed 0, so both ranks sample
the same rollouts as the 1-process run; the gradient averaged over 2 identical halves is the 1-process
gradient, and the sharded forward/backward is the same arithmetic on all-gathered weights. The KL reference is
the same sharded model with its adapters disabled (no copy). Evaluation: 4 prompts, greedy, one per batch, so
2 batches per rank (FSDP needs the same batch count on every rank: each forward is a collective).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlkit.checkpoints import consolidate_checkpoint, load_checkpoint
from vlkit.methods.ares import LitARES

WORKER = Path(__file__).with_name("_fsdp_worker.py")


@pytest.fixture(scope="module")
def runs(ddp, tmp_path_factory):
    """One 2-rank sharded run (3 rollout steps, a distributed checkpoint, test) and the same job on 1 process."""
    root = tmp_path_factory.mktemp("ares_fsdp")
    two = ddp.run("ares_fsdp", root / "two", 2, worker=WORKER, timeout=600, save=str(root / "two.ckpt"))
    one = ddp.run("ares_fsdp", root / "one", 1, worker=WORKER)[0]
    return root, one, two


def test_each_rank_holds_half_of_every_parameter(runs):
    _, one, two = runs
    for name, shard in two[0]["shards"].items():
        other = two[1]["shards"][name]
        assert shard["dtensor"] and shard["placements"] == ["S(0)"], name  # sharded along dim 0 (FSDP2)
        assert shard["local"] + other["local"] == shard["global"] == one["shards"][name]["global"], name
        rows = shard["rows"]  # rank 0 keeps ceil(rows / 2) rows, rank 1 the rest
        assert shard["local"] == -(-rows // 2) * shard["global"] // rows, name
    assert two[0]["shards"]["model.base_model.model.model.embed_tokens.weight"]["local"] == 53 * 64  # 105 rows
    assert not any(s["dtensor"] for s in one["shards"].values())  # the 1-process run is not sharded


def test_sharded_training_equals_one_process(runs, ddp):
    root, one, two = runs
    assert one["global_step"] == two[0]["global_step"] == 3
    for rank in two:
        assert len(rank["steps"]) == 3
        for step_one, step_two in zip(one["steps"], rank["steps"]):
            ddp.assert_same_metrics(step_one, step_two, "train/", atol=1e-6)
    # the adapters have moved by the last rollout, so the reference pass (adapters disabled) differs from the policy
    assert one["steps"][-1]["train/kl"] > 0
    assert one["moved"] == two[0]["moved"] == two[1]["moved"]
    assert one["moved"] and all(".lora_" in name for name in one["moved"])  # the base weights stay frozen
    ddp.assert_same_weights(ddp.weights(root / "two" / "trained.pt"), ddp.weights(root / "one" / "trained.pt"),
                            atol=1e-6)
    assert two[0]["metrics"] == two[1]["metrics"]
    assert one["metrics"]["test/rows"] == two[0]["metrics"]["test/rows"] == 4
    ddp.assert_same_metrics(one["metrics"], two[0]["metrics"], "test/", atol=1e-6)


def test_sharded_checkpoint_consolidates_and_resumes_on_one_process(runs, ddp):
    root, _, two = runs
    folder = root / "two.ckpt"
    assert sorted(p.name for p in folder.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]  # one per rank
    path = consolidate_checkpoint(folder)
    assert path == root / "two.ckpt.consolidated.ckpt"
    checkpoint = load_checkpoint(path, LitARES)  # weights_only=True, written by LitARES
    trained = ddp.weights(root / "two" / "trained.pt")
    ddp.assert_same_weights({k: checkpoint["state_dict"][k] for k in trained}, trained, atol=0.0)
    assert checkpoint["global_step"] == 3
    assert isinstance(checkpoint["optimizer_states"][0]["state"][0]["exp_avg"], torch.Tensor)

    tested = ddp.run("ares_fsdp", root / "test_one", 1, worker=WORKER, fit=False, test_ckpt=str(path))[0]
    ddp.assert_same_metrics(tested["metrics"], two[0]["metrics"], "test/", atol=1e-6)

    resumed = ddp.run("ares_fsdp", root / "resume_one", 1, worker=WORKER, resume=str(path), max_steps=4)[0]
    assert resumed["global_step"] == 4 and len(resumed["steps"]) == 1  # steps 1-3 came from the checkpoint
    assert resumed["adam_steps"] == [4]  # AdamW's moments and step count came along
    ddp.assert_same_weights(ddp.weights(root / "resume_one" / "initial.pt"), trained, atol=0.0)


@pytest.mark.gpu
def test_sharded_ares_on_one_gpu_with_bf16_mixed_matches_unsharded(ddp, tmp_path):
    """The CUDA side of the same path: NCCL (device tensors in every broadcast of ``shard_language_model``, the
    RNG state included), FSDP2 over a 1-GPU mesh and bf16-mixed autocast, against the unsharded run on that GPU.
    Not run on the CPU-only CI (skipped without CUDA; docs/scale-out.md)."""
    options = dict(accelerator="gpu", precision="bf16-mixed")
    sharded = ddp.run("ares_fsdp", tmp_path / "sharded", 1, worker=WORKER, sharded=True, **options)[0]
    plain = ddp.run("ares_fsdp", tmp_path / "plain", 1, worker=WORKER, sharded=False, **options)[0]
    assert all(s["dtensor"] for s in sharded["shards"].values()) and sharded["global_step"] == 3
    for step_sharded, step_plain in zip(sharded["steps"], plain["steps"]):
        ddp.assert_same_metrics(step_plain, step_sharded, "train/", atol=1e-4)
    ddp.assert_same_weights(ddp.weights(tmp_path / "sharded" / "trained.pt"),
                            ddp.weights(tmp_path / "plain" / "trained.pt"), atol=1e-4)
    assert sharded["metrics"]["test/rows"] == plain["metrics"]["test/rows"] == 4


def test_an_empty_build_holds_no_weights_and_draws_nothing():
    """What every rank builds before sharding: the architecture on the meta device, adapters included, with the
    random state untouched (rank 0's real build draws LoRA's A matrices; the others take its state after)."""
    from vlkit.models.language import LanguageModelSettings

    state = torch.get_rng_state()
    bundle = LanguageModelSettings(model_name="tiny-random-lm", lora_r=2).create(seed=0, empty=True)
    assert torch.equal(state, torch.get_rng_state())
    assert {p.device.type for p in bundle.model.parameters()} == {"meta"}
    assert any(".lora_A." in n for n, _ in bundle.model.named_parameters()) and len(bundle.tokenizer) == 105


def test_consolidating_something_else_than_a_checkpoint_folder_names_the_folder(tmp_path):
    with pytest.raises(ValueError, match="folder must be the checkpoint folder of a sharded run"):
        consolidate_checkpoint(tmp_path)
