"""The sparse (CSR) trie tables and the in-place trie processor (issue 15, item 3)."""

import pytest
import torch

from recsys.functional.trie import LevelChildren, allowed_children, build_prefix_tables, prefix_table_bytes
from recsys.models.constrained import DictTrieLogitsProcessor, SIDTrie, TrieLogitsProcessor


def test_csr_tables_by_hand():
    # items (0,1,2), (0,1,3), (1,0,0): radix 4. Prefix keys in base 4:
    # t=0: () -> key 0, children {0, 1}
    # t=1: (0,) -> 0, (1,) -> 1; children (0,) -> {1}, (1,) -> {0}
    # t=2: (0,1) -> 0*4+1 = 1, (1,0) -> 1*4+0 = 4; children (0,1) -> {2, 3}, (1,0) -> {0}
    keys, children, radix = build_prefix_tables(torch.tensor([[0, 1, 2], [0, 1, 3], [1, 0, 0]]))
    assert radix == 4
    assert [k.tolist() for k in keys] == [[0], [0, 1], [1, 4]]
    assert [c.offsets.tolist() for c in children] == [[0, 2], [0, 1, 2], [0, 2, 3]]
    assert [c.codes.tolist() for c in children] == [[0, 1], [1, 0], [2, 3, 0]]
    assert all(isinstance(c, LevelChildren) and c.codes.dtype == torch.int32 for c in children)
    # bytes: 5 int64 keys + 8 int64 offsets + 7 int32 codes = 40 + 64 + 28
    assert prefix_table_bytes(keys, children) == 132


def _prefix_reference(codes):
    """Independent reference: a dict from every prefix tuple to the set of codes that follow it."""
    table = {}
    for row in codes.tolist():
        for t in range(len(row)):
            table.setdefault(tuple(row[:t]), set()).add(row[t])
    return table


def test_memory_counts_prefixes_not_the_radix():
    # 3,000 random IDs over a radix of ~1,000: the last level has ~3,000 prefixes with ~1 child each, where a
    # dense (P, R) table would hold ~3M flags. The tables hold exactly: 8 bytes per prefix key, 8 per offset
    # (P_t + 1 per level), 4 per child code (one per prefix of the next length, the items at the last level).
    g = torch.Generator().manual_seed(0)
    codes = torch.unique(torch.randint(0, 1000, (3000, 3), generator=g), dim=0)
    keys, children, radix = build_prefix_tables(codes)
    ref = _prefix_reference(codes)
    P = [sum(1 for k in ref if len(k) == t) for t in range(3)] + [codes.shape[0]]  # distinct prefixes per length
    assert [k.numel() for k in keys] == P[:3]
    expected = sum(8 * P[t] + 8 * (P[t] + 1) + 4 * P[t + 1] for t in range(3))
    assert prefix_table_bytes(keys, children) == expected
    assert expected < P[2] * radix / 20  # far below the dense last level alone (1 byte per flag)
    # the same catalogue with every code scaled by 1,000 (radix ~1M): identical memory
    keys_wide, children_wide, radix_wide = build_prefix_tables(codes * 1000)
    assert radix_wide > 900 * radix and prefix_table_bytes(keys_wide, children_wide) == expected


def test_allowed_children_matches_a_dict_trie():
    g = torch.Generator().manual_seed(1)
    codes = torch.unique(torch.randint(0, 6, (80, 3), generator=g), dim=0)
    keys, children, radix = build_prefix_tables(codes)
    ref = _prefix_reference(codes)
    for t in range(3):
        # queries: real prefixes, random ones (some absent), a negative code and one >= radix (both closed)
        real = codes[torch.randint(0, codes.shape[0], (20,), generator=g), :t]
        fake = torch.randint(0, 7, (20, t), generator=g)
        queries = torch.cat([real, fake])
        if t:
            queries = torch.cat([queries, torch.full((1, t), -1), torch.full((1, t), radix)])
        rows, got = allowed_children(queries, keys[t], children[t], radix)
        assert (rows[1:] >= rows[:-1]).all()  # rows ascending
        for r, q in enumerate(queries.tolist()):
            want = sorted(ref.get(tuple(q), set())) if all(0 <= c < radix for c in q) else []
            assert got[rows == r].tolist() == want, (t, q)


def _token_trie():
    # items (0,1), (0,2), (1,0), (2,1); level 0 code c -> token 10 + c, level 1 code c -> 20 + c; EOS = 1, V = 30
    codes = torch.tensor([[0, 1], [0, 2], [1, 0], [2, 1]])
    return SIDTrie(codes, [torch.arange(10, 14), torch.arange(20, 24)], vocab_size=30, eos_token_id=1)


def test_allowed_tokens_by_hand():
    trie = _token_trie()
    rows, tokens = trie.allowed_tokens(torch.zeros(2, 0, dtype=torch.long))
    assert rows.tolist() == [0, 0, 0, 1, 1, 1] and tokens.tolist() == [10, 11, 12] * 2  # first codes 0, 1, 2
    rows, tokens = trie.allowed_tokens(torch.tensor([[10], [13], [1], [11]]))
    # after code 0: codes 1, 2; code 3 (token 13) starts no item; EOS is no code; after code 1: code 0
    assert rows.tolist() == [0, 0, 3] and tokens.tolist() == [21, 22, 20]
    rows, tokens = trie.allowed_tokens(torch.tensor([[10, 21], [10, 20], [12, 21]]))
    assert rows.tolist() == [0, 2] and tokens.tolist() == [1, 1]  # (0,0) is no item: nothing, not even EOS


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_inplace_processor_equals_the_dict_reference(layout):
    g = torch.Generator().manual_seed(2)
    codes = torch.unique(torch.randint(0, 8, (150, 3), generator=g), dim=0)
    trie = SIDTrie(codes, [torch.arange(20, 28), torch.arange(30, 38), torch.arange(40, 48)], vocab_size=60,
                   eos_token_id=2)
    prompt = torch.full((12, 3), 5)
    for t in range(4):
        generated = trie.item_token_ids[torch.randint(0, codes.shape[0], (12,), generator=g), :t]
        generated[0] = 2 if t else generated[0]  # one impossible prefix (EOS first): fail closed
        input_ids = torch.cat([prompt, generated], dim=1)  # (12, 3 + t)
        base = torch.randn(60, 12, generator=g).T if layout == "strided" else torch.randn(12, 60, generator=g)
        want = DictTrieLogitsProcessor(trie, 3)(input_ids, base)
        copy_for_out_of_place = base.clone()
        got = TrieLogitsProcessor(trie, 3)(input_ids, copy_for_out_of_place)
        assert torch.equal(got, want) and torch.equal(copy_for_out_of_place, base)  # the input is left as it was
        scores = base.clone()
        got_inplace = TrieLogitsProcessor(trie, 3, inplace=True)(input_ids, scores)
        assert got_inplace.data_ptr() == scores.data_ptr() and torch.equal(scores, want)
        if t:
            assert not torch.isfinite(want[0]).any()
        assert torch.isfinite(want).sum() > 0
