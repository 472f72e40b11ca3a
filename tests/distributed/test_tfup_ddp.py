"""TFUP-T under Lightning's DDP on 2 CPU processes (gloo): test accuracy and mean per-class recall are those of
1 process on the same weights and rows, each of the 101 rows is scored once (padding would make 102), the
gathered predictions are 1 process's, and training moves the same parameters."""

from __future__ import annotations


def test_tfupt_metrics_do_not_change_under_two_ranks(ddp, tmp_path):
    cache = str(tmp_path / "features")
    two = ddp.run("tfupt", tmp_path / "two", 2, save=str(tmp_path / "two.ckpt"), cache_dir=cache)
    one = ddp.run("tfupt", tmp_path / "one", 1, test_ckpt=str(tmp_path / "two.ckpt"), cache_dir=cache)[0]
    for rank in two:
        assert rank["metrics"] == two[0]["metrics"]  # torchmetrics states reduced over ranks: the same everywhere
        # every rank holds the whole test set's rows, once each, in index order
        assert rank["test_rows"] == rank["unique_indices"] == rank["data_rows"] == 101
        assert rank["predictions"] == one["predictions"]
    ddp.assert_same_metrics(one["metrics"], two[0]["metrics"], "test/", atol=1e-6)
    # an independent reading of the logged accuracy: the share of rows whose prediction is their label
    rows = one["predictions"]
    assert abs(sum(p == y for _, p, y in rows) / len(rows) - one["metrics"]["test/acc"]) < 1e-6

    # training under DDP moves what one process moves: the image adapter and the text residual. The weights
    # themselves differ: each rank's loss is a mean over its own confident rows plus a marginal entropy of
    # its own batch, neither of which averages to the full batch's
    assert one["moved"] == two[0]["moved"] == two[1]["moved"]
    assert one["moved"] == ["adapter.net.0.weight", "adapter.net.2.weight", "text_residual"]
