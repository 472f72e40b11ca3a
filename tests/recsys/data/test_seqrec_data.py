import json
import pytest

from recsys.data.sequences import (
    AMAZON18_ROOT,
    Sample,
    SeqRecData,
    SeqRecDataModule,
    load_amazon18,
    load_interactions,
    synthetic_seqrec,
)

HAS_AMAZON = (AMAZON18_ROOT / "Industrial_and_Scientific").exists()


@pytest.mark.skipif(not HAS_AMAZON, reason="shared data absent")
def test_amazon_rebuilt_train_split_touches_no_test_target():
    data = load_amazon18("industrial")
    assert len(data.items) == 3686 and len(data.splits["val"]) == 4532 and len(data.splits["test"]) == 4533
    # every training sample (history + target) is a contiguous piece of its user's interactions before the
    # user's first released row, i.e. the protocol never reads a valid/test target
    import ast

    import pandas as pd

    folder = AMAZON18_ROOT / "Industrial_and_Scientific"
    first = {}
    for file in ("valid.csv", "test.csv"):
        for row in pd.read_csv(folder / file).itertuples():
            first.setdefault(str(row.user_id), [str(i) for i in ast.literal_eval(row.history_item_id)])
    for s in data.splits["train"]:
        seq = first[s.user]
        window = [*s.history, s.target]
        assert any(seq[i : i + len(window)] == window for i in range(len(seq) - len(window) + 1))
    # one sample per prefix: len(first history) - 1 per user
    assert len(data.splits["train"]) == sum(max(0, len(h) - 1) for h in first.values())
    assert len(data.splits["train"]) > 10_000


def test_leave_one_out_protocol(tmp_path):
    csv = tmp_path / "log.csv"
    csv.write_text("user,item,timestamp\nu,a,3\nu,b,1\nu,c,2\nu,d,4\nv,a,1\nv,b,2\n")
    (tmp_path / "items.json").write_text(json.dumps({k: {"title": k.upper()} for k in "abcd"}))
    data = load_interactions(csv, tmp_path / "items.json")
    # u's time order: b, c, a, d -> test d, val a, train (b -> c); v has only 2 items and is dropped
    assert data.splits["test"] == [Sample("u", ("b", "c", "a"), "d")]
    assert data.splits["val"] == [Sample("u", ("b", "c"), "a")]
    assert data.splits["train"] == [Sample("u", ("b",), "c")]


def test_bad_input_is_named():
    items = {"1": {"title": "x"}, "2": {"title": "y"}}
    with pytest.raises(ValueError, match="unknown item id '9'"):
        SeqRecData(items, {"train": [Sample("u", ("1",), "9")]})
    with pytest.raises(ValueError, match="empty history"):
        SeqRecData(items, {"train": [Sample("u", (), "1")]})
    with pytest.raises(ValueError, match="no text"):
        SeqRecData({"1": {"title": " "}}, {"train": []})
    with pytest.raises(ValueError, match="dataset must be"):
        SeqRecDataModule("nope").load()


def test_datamodule_batches_are_left_padded():
    dm = SeqRecDataModule("synthetic", batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["history"].shape[0] == 4 and batch["target"].shape == (4,)
    lengths = (batch["history"] > 0).sum(1)
    for row, n in zip(batch["history"], lengths):
        assert (row[: row.numel() - n] == 0).all() and (row[row.numel() - n :] > 0).all()
    # synthetic users walk i -> i+1: the target follows the last history item
    data = synthetic_seqrec()
    for s in data.splits["test"]:
        assert int(s.target) == (int(s.history[-1]) + 1) % 48
