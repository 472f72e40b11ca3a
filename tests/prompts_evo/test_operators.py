import pytest
import torch

from prompts_evo.functional.operators import (
    add_entry,
    candidate_keys,
    crossover,
    mutate,
    random_subsets,
    remove_entry,
    replace_entry,
    select_top_k,
)


def _setup():
    # 3 slots over 5 entries; slot 2 has only 3 valid entries; slots 0 and 2 editable
    valid = torch.ones(3, 5, dtype=torch.bool)
    valid[2, 3:] = False
    cand = torch.zeros(3, 5, dtype=torch.bool)
    cand[0, [0, 1]] = True
    cand[1, 2] = True
    cand[2, 0] = True
    editable = torch.tensor([True, False, True])
    return cand, valid, editable


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_add_adds_exactly_one_valid_entry_in_an_editable_slot():
    cand, valid, editable = _setup()
    out = add_entry(cand, valid, editable, 20, gen())
    assert out.shape == (20, 3, 5)
    diff = out ^ cand  # (20, 3, 5)
    assert (diff.sum((1, 2)) == 1).all()  # one bit flipped
    assert (out & ~cand).sum((1, 2)).eq(1).all()  # ... and it is an addition
    assert not diff[:, 1].any()  # non-editable slot untouched
    assert not (out & ~valid).any()  # never an invalid entry
    assert torch.equal(out, add_entry(cand, valid, editable, 20, gen()))  # seeded


def test_remove_never_empties_a_slot():
    cand, valid, editable = _setup()
    out = remove_entry(cand, valid, editable, 10, gen(1))
    # only slot 0 holds >= 2 entries: every variant drops entry 0 or 1 of slot 0
    assert (out.sum((1, 2)) == cand.sum() - 1).all()
    assert ((out ^ cand)[:, 1:] == 0).all()
    assert (out.sum(-1) >= 1).all()
    single = torch.zeros(1, 4, dtype=torch.bool)
    single[0, 2] = True
    assert remove_entry(single, torch.ones(1, 4, dtype=torch.bool), torch.tensor([True]), 5, gen()).shape[0] == 0


def test_replace_keeps_size_and_swaps_one_entry():
    cand, valid, editable = _setup()
    out = replace_entry(cand, valid, editable, 15, gen(2))
    assert torch.equal(out.sum(-1), cand.sum(-1).expand(15, 3))  # same size per slot
    assert ((out ^ cand).sum((1, 2)) == 2).all()  # one removed + one added
    assert not (out & ~valid).any()
    assert not (out ^ cand)[:, 1].any()


def test_random_subsets_sizes_clipped_to_valid():
    _, valid, _ = _setup()
    out = random_subsets(valid, torch.tensor([2, 9, 0]), gen())
    # sizes clipped to [1, #valid]: 2, 5, 1
    assert out.sum(-1).tolist() == [2, 5, 1]
    assert not (out & ~valid).any()


def test_mutate_copies_non_editable_slots():
    cand, valid, editable = _setup()
    out = mutate(cand, valid, editable, 6, 2, gen())
    assert out.shape == (6, 3, 5)
    assert torch.equal(out[:, 1], cand[1].expand(6, 5))
    assert (out[:, 0].sum(-1) == 2).all() and (out[:, 2].sum(-1) == 2).all()


def test_crossover_keeps_common_entries_and_only_parent_entries():
    parents = torch.zeros(3, 1, 6, dtype=torch.bool)
    parents[:, 0, 0] = True  # common to all parents
    parents[0, 0, 1] = True
    parents[1, 0, 2] = True
    parents[2, 0, [1, 3]] = True
    kids = crossover(parents, torch.tensor([True]), 200, gen())
    assert kids[:, 0, 0].all()  # common entry always kept
    assert not kids[:, 0, [4, 5]].any()  # entries no parent holds never appear
    # entry 1 is held by 2 of 3 parents -> drawn with probability 2/3; entry 2 with 1/3
    assert kids[:, 0, 1].float().mean().item() == pytest.approx(2 / 3, abs=0.1)
    assert kids[:, 0, 2].float().mean().item() == pytest.approx(1 / 3, abs=0.1)
    same = parents[:1].repeat(4, 1, 1)
    assert torch.equal(crossover(same, torch.tensor([True]), 3, gen()), same[:3])  # identical parents reproduce


def test_select_top_k_prefers_incumbent_on_ties_and_checks_size():
    fitness = torch.tensor([1.0, 3.0, 3.0, 2.0])
    assert select_top_k(fitness, 3).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="population size"):
        select_top_k(fitness, 5)


def test_candidate_keys_distinguish_candidates():
    cand, valid, editable = _setup()
    variants = add_entry(cand, valid, editable, 30, gen())
    keys = candidate_keys(torch.cat([cand.unsqueeze(0), variants]))
    assert keys[0] not in keys[1:]
    # identical tensors give identical keys; the number of distinct keys equals the distinct tensors
    assert len(set(keys[1:])) == len({tuple(v.flatten().tolist()) for v in variants})


def test_type_checks():
    cand, valid, editable = _setup()
    with pytest.raises(TypeError):
        add_entry(cand.int(), valid, editable, 1)
    with pytest.raises(ValueError):
        add_entry(cand, valid[:2], editable, 1)
