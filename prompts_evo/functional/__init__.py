"""Pure tensor math of ProAPO: fitness (``fitness``) and edit/evolution operators (``operators``)."""

from prompts_evo.functional.fitness import (
    FitnessTerms,
    class_embeddings_from_masks,
    fitness_scores,
    interclass_similarity,
    per_candidate_cross_entropy,
    population_logits,
    selected_entry_sums,
    topk_accuracy,
)
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

__all__ = [
    "FitnessTerms",
    "class_embeddings_from_masks",
    "fitness_scores",
    "interclass_similarity",
    "per_candidate_cross_entropy",
    "population_logits",
    "selected_entry_sums",
    "topk_accuracy",
    "add_entry",
    "candidate_keys",
    "crossover",
    "mutate",
    "random_subsets",
    "remove_entry",
    "replace_entry",
    "select_top_k",
]
