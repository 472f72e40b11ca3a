"""ProAPO's edit and evolution operators over prompt selections, with seeded randomness.

Paper: Qu et al., CVPR 2025 (arXiv 2502.19844), Sec. 3 (edit-based and evolution-based operators),
restated from the authors' ``task_specific_selection.py`` / ``class_specific_selection_with_same_template.py``.

A candidate is a bool tensor ``(S, M)``: S slots, each selecting a non-empty subset of M library
entries. Template search uses one slot (the task-level template set over M templates); description
search uses one slot per class (the descriptions chosen for that class). ``valid (S, M)`` marks which
entries exist (classes have different numbers of descriptions) and ``editable (S,)`` which slots an
operator may change (the classes of the current group). Every operator keeps each slot non-empty.

All randomness comes from the ``torch.Generator`` passed in: same generator state, same output.
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


def _uniform_index(mask: Tensor, generator: torch.Generator | None) -> int:
    """Index of one True entry of a 1-d bool mask, uniformly at random."""
    return int(torch.multinomial(mask.float(), 1, generator=generator).item())


def _edit(candidate, valid, editable, num_variants, generator, slot_ok, apply) -> Tensor:
    _check(candidate, valid, editable)
    ok = editable & slot_ok  # (S,)
    if num_variants <= 0 or not bool(ok.any()):
        return candidate.new_zeros((0, *candidate.shape))
    variants = []
    for _ in range(num_variants):
        child = candidate.clone()
        slot = _uniform_index(ok, generator)
        apply(child[slot], valid[slot], generator)
        variants.append(child)
    return torch.stack(variants)  # (n, S, M)


def add_entry(candidate: Tensor, valid: Tensor, editable: Tensor, num_variants: int, generator=None) -> Tensor:
    """``num_variants`` copies of ``candidate`` (S, M), each with one unselected valid entry added to a
    random editable slot. Returns (n, S, M); n = 0 when no slot can grow."""
    _check(candidate, valid, editable)

    def apply(row, valid_row, gen):
        row[_uniform_index(valid_row & ~row, gen)] = True

    slot_ok = (valid & ~candidate).any(-1)  # (S,)
    return _edit(candidate, valid, editable, num_variants, generator, slot_ok, apply)


def remove_entry(candidate: Tensor, valid: Tensor, editable: Tensor, num_variants: int, generator=None) -> Tensor:
    """Copies with one selected entry removed from a random editable slot holding more than two.

    As the authors (``len(prompt_set) > 2`` before any removal), a slot of one or two entries is never
    shrunk; when no editable slot holds three or more, no variant is made: (0, S, M)."""
    _check(candidate, valid, editable)

    def apply(row, valid_row, gen):
        row[_uniform_index(row, gen)] = False

    slot_ok = candidate.sum(-1) > 2  # (S,)
    return _edit(candidate, valid, editable, num_variants, generator, slot_ok, apply)


def replace_entry(candidate: Tensor, valid: Tensor, editable: Tensor, num_variants: int, generator=None) -> Tensor:
    """Copies with one selected entry of a random editable slot swapped for an unselected valid one."""
    _check(candidate, valid, editable)

    def apply(row, valid_row, gen):
        out = _uniform_index(row, gen)
        into = _uniform_index(valid_row & ~row, gen)
        row[out] = False
        row[into] = True

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
    out = []
    sizes = torch.full((base.shape[0],), int(size), dtype=torch.long, device=base.device)
    for _ in range(max(0, num_variants)):
        fresh = random_subsets(valid, sizes, generator)
        out.append(torch.where(editable.unsqueeze(-1), fresh, base))
    return torch.stack(out) if out else base.new_zeros((0, *base.shape))


def crossover(parents: Tensor, editable: Tensor, num_children: int, generator=None) -> Tensor:
    """Crossover of the elite ``parents (K, S, M)``, per editable slot as the authors do for a prompt set.

    Restated from the authors' crossover: an entry held by all K parents is *common* and always kept; an
    entry held by some but not all parents is *differing*, with weight h = the number of parents holding
    it. Each child draws a size k uniformly from {1, ..., D} (D = number of differing entries) and then k
    differing entries without replacement, each draw proportional to h among those not drawn yet (numpy's
    ``choice(p=h/sum(h), replace=False)``; ``torch.multinomial`` without replacement samples the same
    way). The child is the common entries plus those k. With D = 0 (identical parents) the child is the
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
    best_entry = holders.argmax(-1, keepdim=True)  # (S, 1)
    slots = editable.nonzero().flatten().tolist()
    children = []
    for _ in range(max(0, num_children)):
        child = parents[0].clone()  # (S, M): non-editable slots stay the best parent's
        for slot in slots:
            row = common[slot].clone()  # (M,)
            pool = differing[slot].nonzero().flatten()  # (D,) entry indices
            if pool.numel() > 0:
                k = int(torch.randint(1, pool.numel() + 1, (1,), generator=generator).item())  # k ~ U{1..D}
                weights = holders[slot, pool].float()  # (D,)
                picked = torch.multinomial(weights, k, replacement=False, generator=generator)  # (k,)
                row[pool[picked]] = True
            if not row.any():
                row[best_entry[slot]] = True
            child[slot] = row
        children.append(child)
    return torch.stack(children) if children else parents.new_zeros((0, *parents.shape[1:]))


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
    flat = candidates.detach().to("cpu", torch.uint8).reshape(candidates.shape[0], -1)  # (P, S*M)
    pad = (-flat.shape[1]) % 8
    flat = torch.nn.functional.pad(flat, (0, pad)).view(flat.shape[0], -1, 8)  # (P, bytes, 8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    packed = (flat * weights).sum(-1).to(torch.uint8)  # (P, bytes)
    return [bytes(row.tolist()) for row in packed]
