import torch

from recsys.functional.trie import allowed_codes, build_prefix_tables, pack_prefix


def test_prefix_tables_mask_by_hand():
    # items: (0,1,2), (0,1,3), (1,0,0): radix 4
    codes = torch.tensor([[0, 1, 2], [0, 1, 3], [1, 0, 0]])
    keys, allowed, radix = build_prefix_tables(codes)
    assert radix == 4
    # root allows first codes {0, 1}
    assert allowed_codes(torch.zeros(1, 0, dtype=torch.long), keys[0], allowed[0], radix).tolist() == [[True, True, False, False]]
    # after (0,) only 1; after (1,) only 0; after (2,) nothing (not a prefix: fail closed)
    got = allowed_codes(torch.tensor([[0], [1], [2]]), keys[1], allowed[1], radix)
    assert got.tolist() == [[False, True, False, False], [True, False, False, False], [False] * 4]
    # after (0,1): {2,3}; after (1,0): {0}; an invalid (-1) token: nothing
    got = allowed_codes(torch.tensor([[0, 1], [1, 0], [-1, 0]]), keys[2], allowed[2], radix)
    assert got.tolist() == [[False, False, True, True], [True, False, False, False], [False] * 4]


def test_pack_prefix_is_mixed_radix():
    # (3, 1, 2) in base 4 = 3*16 + 1*4 + 2 = 54
    assert pack_prefix(torch.tensor([[3, 1, 2]]), 4).item() == 54


def test_every_path_through_the_tables_is_an_item():
    # property: walking the tables from the root only ever reaches catalogue items, and reaches all of them
    g = torch.Generator().manual_seed(1)
    codes = torch.unique(torch.randint(0, 5, (40, 3), generator=g), dim=0)
    keys, allowed, radix = build_prefix_tables(codes)
    paths = torch.zeros(1, 0, dtype=torch.long)
    for t in range(3):
        ok = allowed_codes(paths, keys[t], allowed[t], radix)  # (P, R)
        parent, code = ok.nonzero(as_tuple=True)
        paths = torch.cat([paths[parent], code.unsqueeze(1)], dim=1)
    assert {tuple(r) for r in paths.tolist()} == {tuple(r) for r in codes.tolist()}
