"""ProAPO's edit and evolution operators over prompt selections, with seeded randomness.

Paper: Qu et al., CVPR 2025 (arXiv 2502.19844), Sec. 3 (edit-based and evolution-based operators),
restated from the authors' ``task_specific_selection.py`` / ``class_specific_selection_with_same_template.py``.

A candidate is a bool tensor ``(S, M)``: S slots, each selecting a non-empty subset of M library
entries. Template search uses one slot (the task-level template set over M templates); description
search uses one slot per class (the descriptions chosen for that class). ``valid (S, M)`` marks which
entries exist (classes have different numbers of descriptions) and ``editable (S,)`` which slots an
operator may change (the classes of the current group). Every operator keeps each slot non-empty.

All randomness comes from the ``torch.Generator`` passed in: same generator state, same output. Each
operator draws all its variants with one call per random choice (a batch of ``num_variants`` rows), so a
generation costs a handful of tensor operations rather than a Python loop of per-variant draws.
Pure tensor functions: no I/O, no state.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlkit.errors import ConfigError, check_int

__all__ = [
    "add_entry",
    "remove_entry",
    "replace_entry",
    "random_subsets",
    "mutate",
    "crossover",
    "select_top_k",
    "candidate_keys",
]


def _check(candidate: Tensor, valid: Tensor, editable: Tensor) -> None:
    if candidate.dtype != torch.bool or valid.dtype != torch.bool or editable.dtype != torch.bool:
        raise TypeError("candidate, valid and editable must be bool tensors")
    if candidate.dim() != 2 or candidate.shape != valid.shape or editable.shape != (candidate.shape[0],):
        raise ConfigError(
            f"candidate and valid must be (S, M) and editable (S,); got {tuple(candidate.shape)}, "
            f"{tuple(valid.shape)}, {tuple(editable.shape)}", argument="candidate"
        )


def _uniform_choices(masks: Tensor, generator: torch.Generator | None) -> Tensor:
    """One True entry per row of ``masks`` (R, M), uniformly at random and independently per row: (R,).

    The argmax of i.i.d. uniform scores over a row's True entries is uniform among them; every row must
    hold at least one True entry."""
    scores = torch.rand(masks.shape, generator=generator, device=masks.device)  # (R, M)
    return scores.masked_fill(~masks, -1.0).argmax(-1)  # (R,)


def _edit(candidate, valid, editable, num_variants, generator, slot_ok, apply) -> Tensor:
    _check(candidate, valid, editable)
    ok = editable & slot_ok  # (S,)
    if num_variants <= 0 or not bool(ok.any()):
        return candidate.new_zeros((0, *candidate.shape))
    slots = _uniform_choices(ok.expand(num_variants, -1), generator)  # (n,) the slot each variant edits
    variants = candidate.unsqueeze(0).repeat(num_variants, 1, 1)  # (n, S, M)
    rows = torch.arange(num_variants, device=candidate.device)  # (n,)
    edited = variants[rows, slots]  # (n, M) a copy of each variant's edited slot
    apply(edited, valid[slots], generator)  # edits the (n, M) rows in place
    variants[rows, slots] = edited
    return variants  # (n, S, M)


def add_entry(candidate: Tensor, valid: Tensor, editable: Tensor, num_variants: int, generator=None) -> Tensor:
    """``num_variants`` copies of ``candidate`` (S, M), each with one unselected valid entry added to a
    random editable slot. Returns (n, S, M); n = 0 when no slot can grow."""
    _check(candidate, valid, editable)

    def apply(rows, valid_rows, gen):  # (n, M), (n, M)
        rows[torch.arange(rows.shape[0], device=rows.device), _uniform_choices(valid_rows & ~rows, gen)] = True

    slot_ok = (valid & ~candidate).any(-1)  # (S,)
    return _edit(candidate, valid, editable, num_variants, generator, slot_ok, apply)


def remove_entry(candidate: Tensor, valid: Tensor, editable: Tensor, num_variants: int, generator=None) -> Tensor:
    """Copies with one selected entry removed from a random editable slot holding more than two.

    As the authors (``len(prompt_set) > 2`` before any removal), a slot of one or two entries is never
    shrunk; when no editable slot holds three or more, no variant is made: (0, S, M)."""
    _check(candidate, valid, editable)

    def apply(rows, valid_rows, gen):  # (n, M), (n, M)
        rows[torch.arange(rows.shape[0], device=rows.device), _uniform_choices(rows, gen)] = False

    slot_ok = candidate.sum(-1) > 2  # (S,)
    return _edit(candidate, valid, editable, num_variants, generator, slot_ok, apply)


def replace_entry(candidate: Tensor, valid: Tensor, editable: Tensor, num_variants: int, generator=None) -> Tensor:
    """Copies with one selected entry of a random editable slot swapped for an unselected valid one."""
    _check(candidate, valid, editable)

    def apply(rows, valid_rows, gen):  # (n, M), (n, M)
        out = _uniform_choices(rows, gen)  # (n,)
        into = _uniform_choices(valid_rows & ~rows, gen)  # (n,)
        index = torch.arange(rows.shape[0], device=rows.device)
        rows[index, out] = False
        rows[index, into] = True

    slot_ok = candidate.any(-1) & (valid & ~candidate).any(-1)  # (S,)
    return _edit(candidate, valid, editable, num_variants, generator, slot_ok, apply)


def random_subsets(valid: Tensor, sizes: Tensor, generator=None) -> Tensor:
    """One random subset per slot: ``sizes (S,)`` entries drawn uniformly without replacement among the
    valid ones (clipped to [1, #valid]). Returns (S, M) bool."""
    if valid.dim() != 2 or sizes.shape != (valid.shape[0],):
        raise ConfigError(f"valid must be (S, M) and sizes (S,); got {tuple(valid.shape)}, {tuple(sizes.shape)}", argument="valid")
    counts = valid.sum(-1)  # (S,)
    sizes = torch.minimum(sizes.clamp(min=1), counts)  # (S,)
    scores = torch.rand(valid.shape, generator=generator, device=valid.device)  # (S, M)
    scores = scores.masked_fill(~valid, -1.0)
    order = scores.argsort(-1, descending=True)  # (S, M)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(valid.shape[1], device=valid.device).expand_as(order))  # (S, M)
    return (ranks < sizes.unsqueeze(-1)) & valid  # (S, M)


def mutate(base: Tensor, valid: Tensor, editable: Tensor, num_variants: int, size: int, generator=None) -> Tensor:
    """Mutation: ``num_variants`` fresh random selections of ``size`` entries for every editable slot
    (the authors draw 2 + epoch templates); non-editable slots are copied from ``base``. (n, S, M)."""
    _check(base, valid, editable)
    check_int("size", int(size) if isinstance(size, Tensor) else size, low=1)
    num, (slots, width) = max(0, num_variants), base.shape
    if num == 0:
        return base.new_zeros((0, *base.shape))
    sizes = torch.full((num * slots,), int(size), dtype=torch.long, device=base.device)  # (n*S,)
    fresh = random_subsets(valid.repeat(num, 1), sizes, generator).view(num, slots, width)  # (n, S, M)
    return torch.where(editable.view(1, slots, 1), fresh, base.unsqueeze(0))  # (n, S, M)


def crossover(parents: Tensor, editable: Tensor, num_children: int, generator=None) -> Tensor:
    """Crossover of the elite ``parents (K, S, M)``, per editable slot as the authors do for a prompt set.

    Restated from the authors' crossover: an entry held by all K parents is *common* and always kept; an
    entry held by some but not all parents is *differing*, with weight h = the number of parents holding
    it. Each child draws a size k uniformly from {1, ..., D} (D = number of differing entries) and then k
    differing entries without replacement, each draw proportional to h among those not drawn yet (numpy's
    ``choice(p=h/sum(h), replace=False)``). All children are drawn at once: the k smallest of E_i / h_i
    (E_i ~ Exp(1) i.i.d.) are such a weighted draw without replacement (Efraimidis and Spirakis, 2006; the
    exponential race ``torch.multinomial`` uses too). The child is the common entries plus those k. With D = 0 (identical parents) the child is the
    common set. The authors add 1e-4 to every weight (a guard for non-positive scores); with integer
    h >= 1 that changes no probability by more than 1e-4 and is left out. Non-editable slots come from
    ``parents[0]`` (the best); a slot that would still be empty (only when parents hold nothing there) gets
    its most frequent entry. Returns (n, S, M).
    """
    if parents.dim() != 3 or parents.dtype != torch.bool or editable.shape != (parents.shape[1],):
        raise ValueError(f"parents must be bool (K, S, M) and editable (S,); got {tuple(parents.shape)}, {tuple(editable.shape)}")
    common = parents.all(0)  # (S, M)
    holders = parents.sum(0)  # (S, M) number of parents holding each entry
    differing = (holders > 0) & ~common  # (S, M)
    best_entry = holders.argmax(-1)  # (S,)
    num = max(0, num_children)
    if num == 0:
        return parents.new_zeros((0, *parents.shape[1:]))
    children = parents[0].unsqueeze(0).repeat(num, 1, 1)  # (n, S, M): non-editable slots stay the best parent's
    for slot in editable.nonzero().flatten().tolist():
        rows = common[slot].unsqueeze(0).repeat(num, 1)  # (n, M)
        pool = differing[slot].nonzero().flatten()  # (D,) entry indices
        if pool.numel() > 0:
            k = torch.randint(1, pool.numel() + 1, (num,), generator=generator, device=parents.device)  # (n,) k ~ U{1..D}
            weights = holders[slot, pool].float()  # (D,)
            race = torch.empty(num, pool.numel(), device=parents.device).exponential_(generator=generator) / weights  # (n, D)
            rank = race.argsort(-1).argsort(-1)  # (n, D) position of each entry in the race
            rows[:, pool] = rows[:, pool] | (rank < k.unsqueeze(-1))  # (n, D) the k first
        empty = ~rows.any(-1)  # (n,) only when the parents hold nothing in this slot
        rows[empty, best_entry[slot]] = True
        children[:, slot] = rows
    return children  # (n, S, M)


def select_top_k(fitness: Tensor, k: int) -> Tensor:
    """Indices of the k fittest candidates, best first; ties keep the earlier candidate (the incumbent
    elite is listed first, so a newcomer must be strictly better to displace it)."""
    if fitness.dim() != 1:
        raise ConfigError(f"fitness must be (P,), got {tuple(fitness.shape)}", argument="fitness")
    check_int("k", k, low=1)
    if fitness.shape[0] < k:
        raise ConfigError(f"population size ({fitness.shape[0]}) must be >= the selection size k ({k}) >= 1", argument="k")
    order = torch.sort(fitness, descending=True, stable=True).indices  # (P,)
    return order[:k]


def candidate_keys(candidates: Tensor) -> list[bytes]:
    """Hashable key per candidate (P, S, M) -> P byte strings (bit-packed selection), for de-duplication."""
    flat = candidates.detach().to("cpu", torch.uint8).flatten(1)  # (P, S*M)
    pad = (-flat.shape[1]) % 8
    if pad:
        flat = torch.nn.functional.pad(flat, (0, pad))  # (P, S*M rounded up to bytes)
    flat = flat.view(flat.shape[0], flat.shape[1] // 8, 8)  # (P, bytes, 8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    packed = (flat * weights).sum(-1, dtype=torch.uint8).numpy()  # (P, bytes): first entry in the high bit
    return [row.tobytes() for row in packed]
