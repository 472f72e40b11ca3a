"""Stage 1 scores template sets from per-template embeddings: ``selected_entry_sums`` and the search's use of it.

The reference is the dense product the search used before (``class_embeddings_from_masks``: every
candidate's mask times the whole (C, M, D) pool), which these sums must reproduce, from scratch and on the
incremental path (a child one edit away from its parent starts from the parent's sum).
"""

import pytest
import torch
import torch.nn.functional as F

from prompts_evo.data.prompts import expand_type_words
from prompts_evo.functional.fitness import class_embeddings_from_masks, fitness_scores, selected_entry_sums
from prompts_evo.models.prompt_embeddings import PromptEmbeddingCache
from prompts_evo.models.search import ProAPOSearch


TEMPLATES = ["a photo of a {}.", "a bad photo of a {}.", "a sculpture of a {}.", "a rendering of a {}.", "itap of a {}.",
             "a {} in a video game.", "art of the {}.", "a photo of the small {}."]  # 8 of CLIP's templates


def _pool(entries=7, classes=3, dim=5, seed=0):
    return F.normalize(torch.randn(classes, entries, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)  # (C, M, D)


def _dense_sums(pool, masks):  # (C, M, D), (P, M) -> (P, C, D): the einsum the search used before
    return torch.einsum("pm,cmd->pcd", masks.float(), pool)


def test_sums_from_scratch_equal_the_dense_product():
    pool = _pool()
    masks = torch.tensor([[1, 0, 1, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0, 0]], dtype=torch.bool)
    sums = selected_entry_sums(pool.transpose(0, 1).contiguous(), masks)
    assert torch.allclose(sums, _dense_sums(pool, masks), atol=1e-6)
    # hand values: row 0 is entries 0 + 2 + 6; the empty row is zero; a single entry is exactly that entry
    assert torch.allclose(sums[0], pool[:, 0] + pool[:, 2] + pool[:, 6], atol=1e-6)
    assert torch.equal(sums[1], torch.zeros(3, 5))
    assert torch.equal(sums[3], pool[:, 3])
    # normalised, they are the class embeddings of class_embeddings_from_masks (the same normalisation)
    assert torch.allclose(F.normalize(sums, dim=-1), class_embeddings_from_masks(pool, masks.unsqueeze(1)), atol=1e-6)


def test_children_close_to_a_parent_start_from_its_sum():
    pool = _pool()
    entries = pool.transpose(0, 1).contiguous()  # (M, C, D)
    parents = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    children = torch.tensor([
        [1, 1, 1, 1, 0, 0, 0],  # parent 0 + entry 3: 1 edit < 4 entries -> incremental
        [1, 0, 1, 0, 0, 0, 0],  # parent 0 - entry 1: 1 edit < 2 entries -> incremental
        [0, 1, 0, 0, 1, 1, 1],  # parent 1 + entry 1: incremental from parent 1
        [1, 1, 0, 0, 0, 0, 1],  # replace 2 -> 6 in parent 0: 2 edits < 3 entries -> incremental
        [0, 0, 0, 1, 0, 0, 0],  # entry 3 alone: 4 edits from either parent >= 1 entry -> from scratch
    ], dtype=torch.bool)
    parent_sums = selected_entry_sums(entries, parents)
    sums = selected_entry_sums(entries, children, parents, parent_sums)
    assert torch.allclose(sums, _dense_sums(pool, children), atol=1e-6)
    # which rows used the parent's sum: shift the parents' sums by one and see who moves by exactly one
    shifted = selected_entry_sums(entries, children, parents, parent_sums + 1.0)
    moved = (shifted - sums).flatten(1)  # (P, C*D)
    assert torch.allclose(moved[:4], torch.ones_like(moved[:4]))
    assert torch.equal(moved[4], torch.zeros_like(moved[4]))


def test_bad_shapes_name_the_argument():
    entries = _pool().transpose(0, 1)
    with pytest.raises(ValueError, match="masks"):
        selected_entry_sums(entries, torch.zeros(2, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="parent_masks"):
        selected_entry_sums(entries, torch.zeros(2, 7, dtype=torch.bool), torch.zeros(1, 7, dtype=torch.bool), None)


class _DenseCheck(ProAPOSearch):
    """Scores every stage-1 population both ways: the search's path and the dense product (the
    implementation before per-template caching), and keeps the largest differences."""

    def _score(self, masks, parents=None):
        terms = super()._score(masks, parents)
        if self.stage == "templates":
            dense = fitness_scores(self.features, self.labels, class_embeddings_from_masks(self._pool, masks),
                                   self.logit_scale, **self.weights)
            self.worst = max(self.worst, float((terms.fitness - dense.fitness).abs().max()))
            self.same_accuracy &= bool(torch.equal(terms.top1, dense.top1) and torch.equal(terms.top5, dense.top5))
            self.incremental_batches += parents is not None
        return terms


@pytest.mark.parametrize("prune", [True, False])
def test_search_fitness_equals_the_dense_implementation(toy_task, hash_encoder, prune):
    classes, features, labels = toy_task
    library = expand_type_words(TEMPLATES, ["clothing"])  # 8 templates and their variants
    cache = PromptEmbeddingCache(hash_encoder, "hash")
    search = _DenseCheck(classes, features, labels, cache, library, None, seed=0, template_generations=4,
                         prune_templates=prune, max_templates=0 if not prune else 32)
    search.worst, search.same_accuracy, search.incremental_batches = 0.0, True, 0
    while not search.done:
        search.step()
    assert search.incremental_batches == 4  # every generation's children went through the incremental path
    assert search.same_accuracy
    assert search.worst < 1e-4  # fitness ~ 0.5 * top1 - 10 * CE: float32 rounding of the sums only


def test_unseen_draws_the_authors_budget_once(toy_task, hash_encoder):
    # the authors try n + 64 times (one candidate each) to find n new children: one batch of n + max_retries
    classes, features, labels = toy_task
    search = ProAPOSearch(classes, features, labels, PromptEmbeddingCache(hash_encoder, "hash"),
                          ["a {}.", "the {}.", "a photo of a {}.", "an image of a {}."], None, max_retries=5)
    asked = []
    same = torch.zeros(1, 1, 4, dtype=torch.bool)
    same[0, 0, 0] = True

    def make(n):
        asked.append(n)
        return same.repeat(n, 1, 1)  # (n, 1, 4): one candidate, drawn n times

    assert len(search._unseen(make, 3)) == 1  # the duplicates are skipped
    assert asked == [3 + 5]
    assert search._unseen(make, 3) == []  # seen now
