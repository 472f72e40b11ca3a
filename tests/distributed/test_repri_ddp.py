"""RePRI under Lightning's DDP on 2 CPU processes (gloo): mIoU and FB-IoU per fold and overall, for the
prototype, RePRI and oracle variants, and the proportion error, are those of 1 process on the same 5 episodes,
each scored once (padding would make 6); the base training's validation mIoU is 1 process's on the same weights
and 33 scenes, and base training moves the head only, as on 1 process."""

from __future__ import annotations


def test_repri_fold_metrics_do_not_change_under_two_ranks(ddp, tmp_path):
    two = ddp.run("repri", tmp_path / "two", 2)
    one = ddp.run("repri", tmp_path / "one", 1)[0]
    assert two[0]["metrics"] == two[1]["metrics"]
    assert one["metrics"]["test/episodes"] == two[0]["metrics"]["test/episodes"] == one["data_rows"] == 5
    ddp.assert_same_metrics(one["metrics"], two[0]["metrics"], "test/", atol=1e-6)
    assert {f"test/fold0/miou_{v}" for v in ("prototype", "repri", "oracle")} <= set(one["metrics"])
    assert one["metrics"]["test/fbiou_oracle"] > 0  # scored pixels: equality is not between two zeros


def test_repri_base_training_validation_does_not_change_under_two_ranks(ddp, tmp_path):
    two = ddp.run("repri_base", tmp_path / "two", 2, save=str(tmp_path / "two.ckpt"))
    one = ddp.run("repri_base", tmp_path / "one", 1, test_ckpt=str(tmp_path / "two.ckpt"))[0]
    assert two[0]["metrics"] == two[1]["metrics"]
    ddp.assert_same_metrics(one["metrics"], two[0]["metrics"], "val/", atol=1e-6)
    assert one["metrics"]["val/base_miou"] > 0
    # the pixel cross-entropy is a mean over each rank's labelled pixels (their counts differ), so the DDP
    # weights are not the full-batch ones; what moves is the same: the head, never the frozen backbone
    assert one["moved"] == two[0]["moved"] == two[1]["moved"]
    assert one["moved"] and all(name.startswith("head.") for name in one["moved"])
