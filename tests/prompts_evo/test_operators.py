import math

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
    # the authors only remove from a set of more than two entries (issue 10): give slot 0 a third entry.
    # Slot 0 is then the only slot holding > 2: every variant drops entry 0, 1 or 4 of slot 0
    cand[0, 4] = True
    out = remove_entry(cand, valid, editable, 10, gen(1))
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
    # the authors' scheme (issue 10; it replaced "include each entry with probability holders / 3"):
    # differing entries 1, 2, 3 with holder weights 2, 1, 1; k ~ U{1, 2, 3}, then k drawn by weight.
    # Entry 2: k=1 -> 1/4; k=2 -> 1 - P({1, 3}) = 1 - (2/4 * 1/2 + 1/4 * 2/3) = 7/12; k=3 -> 1;
    # mean (1/4 + 7/12 + 1) / 3 = 11/18. Entry 1: E[k] - 2 * 11/18 = 2 - 11/9 = 7/9.
    assert kids[:, 0, 1].float().mean().item() == pytest.approx(7 / 9, abs=0.1)
    assert kids[:, 0, 2].float().mean().item() == pytest.approx(11 / 18, abs=0.1)
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


def test_remove_needs_more_than_two_entries_like_the_authors():
    # Issue 10 (5): the authors remove only from a prompt set of more than two entries. Two entries:
    # no variant at all; three entries: every variant holds exactly two of the three.
    valid, editable = torch.ones(1, 5, dtype=torch.bool), torch.tensor([True])
    two = torch.tensor([[True, True, False, False, False]])
    assert remove_entry(two, valid, editable, 5, gen()).shape == (0, 1, 5)
    three = torch.tensor([[True, True, True, False, False]])
    out = remove_entry(three, valid, editable, 30, gen())
    assert out.shape == (30, 1, 5)
    assert (out.sum(-1) == 2).all() and not (out & ~three).any()
    # every one of the three entries gets removed at some point (uniform choice, 30 draws: P(miss) < 1e-5)
    assert (~out[:, 0, :3]).any(0).all()


def _four_parents():
    # 4 parents over 6 entries, one slot. Entry 0 is held by all (common); entries 1 and 2 by one parent
    # each; entries 3 and 4 by two parents each; entry 5 by none. Differing entries 1..4, weights 1, 1, 2, 2.
    parents = torch.zeros(4, 1, 6, dtype=torch.bool)
    parents[:, 0, 0] = True
    parents[0, 0, [1, 3]] = True
    parents[1, 0, [2, 3]] = True
    parents[2, 0, 4] = True
    parents[3, 0, 4] = True
    return parents


def test_crossover_size_is_uniform_and_picks_follow_the_holders():
    # Issue 10 (4), the authors' crossover: k ~ U{1, ..., D} with D = 4 differing entries, then k of them
    # without replacement, each draw proportional to the number of parents holding it.
    n = 4000
    kids = crossover(_four_parents(), torch.tensor([True]), n, gen(3))
    assert kids[:, 0, 0].all() and not kids[:, 0, 5].any()  # common kept, unheld never
    k = kids[:, 0, 1:5].sum(-1)  # (n,) differing entries taken
    assert k.min().item() == 1 and k.max().item() == 4
    # each k in {1, 2, 3, 4} has probability 1/4: binomial sd sqrt(0.25 * 0.75 / 4000) = 0.0068, tolerance 5 sd
    for size in range(1, 5):
        assert (k == size).float().mean().item() == pytest.approx(0.25, abs=0.035)
    # among the k = 1 children (about 1000) the single pick is entry 3 or 4 with probability 2/6 each and
    # entry 1 or 2 with 1/6 each: the weights are the holder counts. sd <= sqrt(1/3 * 2/3 / 900) = 0.016
    singles = kids[k == 1, 0, 1:5].float().mean(0)  # (4,)
    assert singles.tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 3, 1 / 3], abs=0.07)


def test_crossover_single_holder_inclusion_matches_the_exact_probability():
    # Issue 10 (4): "a single-holder template: 0.54 vs 0.25". Entry 1 is held by 1 of 4 parents, so the old
    # rule (include with probability holders / parents) took it with 1/4. Under the authors' scheme
    # (weights 1, 1, 2, 2 over entries 1..4, total 6; each k with probability 1/4):
    #   k=1: 1/6
    #   k=2: 1/6 (first) + 1/6 * 1/5 (entry 2 first) + 2 * 2/6 * 1/4 (entry 3 or 4 first) = 11/30
    #   k=3: 1 - P(the three picks are 2, 3, 4) = 1 - (2 * 1/6 * 2/5 * 2/3 + 2 * 2/6 * 1/4 * 2/3
    #        + 2 * 2/6 * 2/4 * 1/2) = 1 - 11/30 = 19/30
    #   k=4: 1
    # P = (5/30 + 11/30 + 19/30 + 30/30) / 4 = 13/24 = 0.5417. The two-holder entries then have
    # (E[k] - 2 * 13/24) / 2 = (5/2 - 13/12) / 2 = 17/24.
    n = 4000
    kids = crossover(_four_parents(), torch.tensor([True]), n, gen(4))
    freq = kids[:, 0, 1:5].float().mean(0)  # (4,)
    tol = 4.5 * math.sqrt(13 / 24 * 11 / 24 / n)  # binomial sd 0.0079 -> tolerance 0.035 (0.25 is 37 sd away)
    assert freq[0].item() == pytest.approx(13 / 24, abs=tol)
    assert freq[1].item() == pytest.approx(13 / 24, abs=tol)
    assert freq[2].item() == pytest.approx(17 / 24, abs=tol)
    assert freq[3].item() == pytest.approx(17 / 24, abs=tol)


def test_crossover_copies_non_editable_slots_from_the_best_parent():
    parents = _four_parents().repeat(1, 2, 1)  # (4, 2, 6): slot 1 is a copy of slot 0
    kids = crossover(parents, torch.tensor([False, True]), 50, gen())
    assert torch.equal(kids[:, 0], parents[0, 0].expand(50, 6))
    assert kids[:, 1, 0].all() and (kids[:, 1, 1:5].sum(-1) >= 1).all()
