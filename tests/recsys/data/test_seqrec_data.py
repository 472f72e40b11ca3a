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


def test_semantic_ids_tokens_and_atomic_round_trip(tmp_path):
    import torch

    from recsys.data.semantic_ids import SemanticIDs

    # 3 items, 2 levels; level 0 has 2 codes, level 1 has 3
    sids = SemanticIDs(["7", "8", "9"], torch.tensor([[0, 2], [1, 0], [1, 1]]), [2, 3])
    assert sids.sid_string(0) == "<a_0><b_2>"
    assert sids.level_tokens(1) == ["<b_0>", "<b_1>", "<b_2>"]
    # level by level, each level's tokens contiguous: 2 + 3 tokens
    assert sids.all_tokens() == ["<a_0>", "<a_1>", "<b_0>", "<b_1>", "<b_2>"]
    path = tmp_path / "sub" / "sid_index.json"
    sids.save(path)
    assert json.loads(path.read_text()) == {"7": ["<a_0>", "<b_2>"], "8": ["<a_1>", "<b_0>"], "9": ["<a_1>", "<b_1>"]}
    assert [p.name for p in path.parent.iterdir()] == ["sid_index.json"]  # no temporary file left behind
    back = SemanticIDs.load(path, ["7", "8", "9"], dedup=False)
    # loaded sizes are the largest code used + 1 per level: 2 and 3
    assert back.codes.tolist() == sids.codes.tolist() and back.codebook_sizes == [2, 3]


def test_load_semantic_ids_resolves_the_three_forms(tmp_path):
    from recsys.data.semantic_ids import load_semantic_ids

    data = synthetic_seqrec(n_items=12)
    ids = load_semantic_ids("random-4x2", data)
    # 12 items drawn from 4 ** 2 = 16 distinct IDs: all unique, every code in [0, 4)
    assert ids.codes.shape == (12, 2) and len({tuple(r) for r in ids.codes.tolist()}) == 12
    assert ids.codebook_sizes == [4, 4] and int(ids.codes.max()) < 4
    ids.save(tmp_path / "sid.json")
    assert load_semantic_ids(str(tmp_path / "sid.json"), data).codes.tolist() == ids.codes.tolist()
    with pytest.raises(ValueError, match="sid_path='released' needs an amazon18"):
        load_semantic_ids("released", data)
    with pytest.raises(FileNotFoundError, match="sid_path"):
        load_semantic_ids(str(tmp_path / "missing.json"), data)


def test_prompts_show_one_field_and_ask_for_another():
    from recsys.data.prompts import ITEM_TASKS, TASKS, build_example, prompt_vocabulary_texts

    titles = {"1": "red pen", "2": "blue tape"}
    prompt, response = build_example("title_seq2sid", ["1", "2"], "2", lambda i: f"<a_{i}>", titles.get)
    assert prompt == "### Instruction:\nPredict the ID of the next item.\n### Input:\nred pen; blue tape\n### Response:\n"
    assert response == "<a_2>"
    prompt, response = build_example("sid2title", [], "1", lambda i: f"<a_{i}>", titles.get)
    assert "### Input:\n<a_1>\n" in prompt and response == "red pen"
    # the item tasks are exactly those whose input is not a history
    assert set(ITEM_TASKS) == {t for t, (_, shown, _) in TASKS.items() if not shown.startswith("history")}
    texts = prompt_vocabulary_texts(["red pen"])
    assert texts[0] == "red pen" and len(texts) == 1 + len(TASKS)
