"""SASRec and MiniOneRec under Lightning's DDP on 2 CPU processes (gloo): the test metrics (HR/NDCG by exact
ranking and by constrained beam search, the loss, the invalid beams) are those of 1 process on the same rows,
every row is scored once (13 rows: padding would make 14), and training moves the same parameters."""

from __future__ import annotations


def test_sasrec_metrics_and_weights_do_not_change_under_two_ranks(ddp, tmp_path):
    # 2 ranks x 20 rows per step (40 training rows: every step sees all of them, no padding) ...
    two = ddp.run("sasrec", tmp_path / "two", 2, train_batch=20, save=str(tmp_path / "two.ckpt"))
    # ... against 1 process x 40 rows per step, tested on the 2-rank weights (the same rows, the same weights)
    one = ddp.run("sasrec", tmp_path / "one", 1, train_batch=40, test_ckpt=str(tmp_path / "two.ckpt"))[0]
    assert two[0]["metrics"] == two[1]["metrics"]  # reduced over ranks: identical on both
    assert one["metrics"]["test/rows"] == two[0]["metrics"]["test/rows"] == 13.0
    ddp.assert_same_metrics(one["metrics"], two[0]["metrics"], "test/", atol=1e-6)
    assert one["metrics"]["test/hr@20"] > 0  # the metric saw hits: equality is not between two zeros

    # training: the loss is a mean over rows and each rank holds half of every step's rows, so DDP's averaged
    # gradient is the 1-process full-batch gradient and AdamW takes the same steps from the same start
    initial = ddp.weights(tmp_path / "one" / "initial.pt")
    assert all((initial[k] == v).all() for k, v in ddp.weights(tmp_path / "two" / "initial.pt").items())
    single, many = ddp.weights(tmp_path / "one" / "trained.pt"), ddp.weights(tmp_path / "two" / "trained.pt")
    assert one["moved"] == two[0]["moved"] == sorted(single)
    ddp.assert_same_weights(single, many, atol=1e-5)  # (but the key bias: see assert_same_weights)
    assert all((single[k] - initial[k]).abs().max() > 1e-3 for k in single)  # and they did train


def test_minionerec_beam_and_exact_metrics_do_not_change_under_two_ranks(ddp, tmp_path):
    two = ddp.run("minionerec", tmp_path / "two", 2, save=str(tmp_path / "two.ckpt"))
    one = ddp.run("minionerec", tmp_path / "one", 1, test_ckpt=str(tmp_path / "two.ckpt"))[0]
    assert two[0]["metrics"] == two[1]["metrics"]
    metrics = one["metrics"]
    assert metrics["test/rows"] == two[0]["metrics"]["test/rows"] == 13.0
    # evaluation.max_exact_rows = 7: the split's first 7 rows, wherever they sit (rank 0 holds 4, rank 1 3)
    assert metrics["test/exact_rows"] == two[0]["metrics"]["test/exact_rows"] == 7.0
    ddp.assert_same_metrics(metrics, two[0]["metrics"], "test/", atol=1e-6)
    # some targets are found (so equality is not between two zeros) and the trie keeps every beam valid
    assert metrics["test/hr@5"] > 0 and metrics["test/exact_hr@20"] > 0 and metrics["test/invalid_items"] == 0
    # SFT under DDP moves the parameters that one process moves: the whole scratch decoder
    assert one["moved"] == two[0]["moved"] == two[1]["moved"]
    assert len(one["moved"]) == len(ddp.weights(tmp_path / "one" / "trained.pt"))
