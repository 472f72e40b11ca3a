"""MiniOneRec SFT of a pretrained-style Hugging Face Llama, sharded with FSDP2 on 2 CPU processes (gloo):
Lightning's ``ModelParallelStrategy``, with ``LitMiniOneRec.configure_model`` building the decoder on the meta
device (``from_config``, the ID rows added, nothing read) and filling its shards from rank 0, which alone reads
the ``save_pretrained`` directory (``from_pretrained``, the path SmolLM2 takes).

Why the numbers must agree: each step takes 8 of the 16 training rows, the same 8 on 1 process as on 2 ranks
together (one distributed sampler order; 4 rows per rank), and every response is 3 tokens (2 ID tokens + EOS), so
the mean of the two ranks' losses is the 1-process loss and the gradient FSDP averages is the 1-process one.
Evaluation: 12 rows, 3 per batch, 2 batches per rank (FSDP needs the same count on every rank).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlkit.checkpoints import consolidate_checkpoint

WORKER = Path(__file__).with_name("_fsdp_worker.py")


def write_tiny_llama(directory: Path) -> Path:
    """A pretrained-style Hugging Face directory (``save_pretrained``) of a tiny random Llama (2 layers, width 32,
    tied embeddings, seeded) with the kit's character tokenizer: what ``from_pretrained`` reads for SmolLM2."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from vlkit.models.language import char_tokenizer

    tok = char_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         bos_token_id=None)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def runs(ddp, tmp_path_factory):
    """The tiny Llama directory, then one 2-rank sharded SFT epoch (distributed checkpoint, test) and the same
    job on 1 process (a one-file checkpoint, test)."""
    root = tmp_path_factory.mktemp("minionerec_fsdp")
    backbone = str(write_tiny_llama(root / "llama"))
    two = ddp.run("minionerec_fsdp", root / "two", 2, worker=WORKER, timeout=600, backbone=backbone,
                  save=str(root / "two.ckpt"))
    one = ddp.run("minionerec_fsdp", root / "one", 1, worker=WORKER, backbone=backbone, save=str(root / "one.ckpt"))[0]
    return root, backbone, one, two


def test_sharded_sft_equals_one_process(runs, ddp):
    root, _, one, two = runs
    embed = "model.model.embed_tokens.weight"  # 105 characters + 16 ID tokens = 121 rows of 32
    assert [r["shards"][embed]["local"] for r in two] == [61 * 32, 60 * 32]
    assert all(s["dtensor"] and s["placements"] == ["S(0)"] for r in two for s in r["shards"].values())
    assert one["global_step"] == two[0]["global_step"] == 2
    for step in range(2):  # the mean of the ranks' response-token losses is the 1-process loss
        mean = sum(r["steps"][step]["train/loss"] for r in two) / 2
        assert abs(mean - one["steps"][step]["train/loss"]) < 1e-5
    assert two[0]["steps"][0]["train/loss"] != two[1]["steps"][0]["train/loss"]  # the ranks saw different rows
    assert one["moved"] == two[0]["moved"] and len(one["moved"]) == len(one["shards"])  # full fine-tuning
    ddp.assert_same_weights(ddp.weights(root / "two" / "trained.pt"), ddp.weights(root / "one" / "trained.pt"),
                            atol=1e-5)
    assert one["metrics"]["test/rows"] == one["metrics"]["test/exact_rows"] == two[0]["metrics"]["test/rows"] == 12
    assert two[0]["metrics"] == two[1]["metrics"]
    ddp.assert_same_metrics(one["metrics"], two[0]["metrics"], "test/", atol=1e-6)


def test_sharded_checkpoint_tests_on_one_process_and_one_process_checkpoint_resumes_sharded(runs, ddp):
    root, backbone, one, two = runs
    path = consolidate_checkpoint(root / "two.ckpt", root / "two_full.ckpt")
    tested = ddp.run("minionerec_fsdp", root / "test_one", 1, worker=WORKER, backbone=backbone, fit=False,
                     test_ckpt=str(path))[0]
    ddp.assert_same_metrics(tested["metrics"], two[0]["metrics"], "test/", atol=1e-6)

    # the other way: a 1-process checkpoint (one file) resumes sharded; Lightning's ModelParallelStrategy loads
    # the full tensors and keeps each rank's slice, the optimiser state too
    resumed = ddp.run("minionerec_fsdp", root / "resume_two", 2, worker=WORKER, timeout=600, backbone=backbone,
                      resume=str(root / "one.ckpt"), max_epochs=2)
    assert [r["global_step"] for r in resumed] == [4, 4] and [r["adam_steps"] for r in resumed] == [[4], [4]]
    start = ddp.weights(root / "resume_two" / "initial.pt")
    ddp.assert_same_weights(start, ddp.weights(root / "one" / "trained.pt"), atol=0.0)
    assert resumed[0]["moved"] and all(r["shards"][next(iter(r["shards"]))]["dtensor"] for r in resumed)
    assert isinstance(torch.load(path, weights_only=True)["optimizer_states"][0]["state"][0]["exp_avg"], torch.Tensor)
