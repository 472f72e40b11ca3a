"""A checkpoint written under Lightning's DDP (2 CPU processes, gloo) resumes on 1 process, and one written on
1 process resumes under DDP, to the weights of an uninterrupted run.

SASRec on 40 training rows with every step taking all of them (2 ranks x 20 or 1 process x 40, dropout 0):
the loss is a mean over rows, so a DDP step is the 1-process step (tests/distributed/test_recsys_ddp.py) and
any split of the 2 epochs between the two layouts must end at the weights of 2 epochs on 1 process, provided
that the checkpoint carries the weights, AdamW's moments and the step counter across the change of layout.
A DDP checkpoint is one full state dict written by rank 0 (no sharding), so nothing needs consolidating.
"""

from __future__ import annotations

import torch


def _checkpoint(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_checkpoints_move_between_two_ranks_and_one(ddp, tmp_path):
    straight = ddp.run("sasrec", tmp_path / "straight", 1, epochs=2, test=False)[0]
    reference = ddp.weights(tmp_path / "straight" / "trained.pt")
    assert straight["global_step"] == 2

    # epoch 1 under DDP, epoch 2 on 1 process
    ddp.run("sasrec", tmp_path / "ddp_first", 2, epochs=1, train_batch=20, save=str(tmp_path / "ddp.ckpt"), test=False)
    ckpt = _checkpoint(tmp_path / "ddp.ckpt")
    assert ckpt["global_step"] == 1 and ckpt["epoch"] == 1 and ckpt["optimizer_states"][0]["state"]  # after epoch 0
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])  # the LightningModule's names, not DDP's
    resumed = ddp.run("sasrec", tmp_path / "one_after", 1, epochs=2, resume=str(tmp_path / "ddp.ckpt"), test=False)[0]
    assert resumed["global_step"] == 2
    start = ddp.weights(tmp_path / "one_after" / "initial.pt")  # the weights the resumed fit started from
    assert all(torch.equal(start[k], ckpt["state_dict"][k]) for k in start)
    ddp.assert_same_weights(ddp.weights(tmp_path / "one_after" / "trained.pt"), reference)

    # epoch 1 on 1 process, epoch 2 under DDP
    ddp.run("sasrec", tmp_path / "one_first", 1, epochs=1, save=str(tmp_path / "one.ckpt"), test=False)
    after = ddp.run("sasrec", tmp_path / "ddp_after", 2, epochs=2, train_batch=20, resume=str(tmp_path / "one.ckpt"),
                    test=False)
    assert [r["global_step"] for r in after] == [2, 2]
    ddp.assert_same_weights(ddp.weights(tmp_path / "ddp_after" / "trained.pt"), reference)

    # the second epoch did move the weights: resuming is not a no-op that the comparison would miss
    first_epoch = _checkpoint(tmp_path / "one.ckpt")["state_dict"]
    assert max((first_epoch[k] - reference[k]).abs().max() for k in reference) > 1e-3
