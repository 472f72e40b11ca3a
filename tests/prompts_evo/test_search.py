import pytest
import torch

from prompts_evo.functional.fitness import class_embeddings_from_masks
from prompts_evo.data.prompts import expand_type_words
from prompts_evo.models.prompt_embeddings import PromptEmbeddingCache
from prompts_evo.models.search import BASELINE_TEMPLATE, ProAPOSearch, render_prompt

TEMPLATES = ["a photo of a {}.", "a sketch of a {}.", "art of the {}.", "itap of a {}.", "a bad photo of the {}."]


def make_search(task, encoder, seed=0, descriptions=True, **kw):
    classes, features, labels = task
    desc = {c: [f"it is {c} thing {j}." for j in range(5)] for c in classes} if descriptions else None
    cache = PromptEmbeddingCache(encoder, "hash")
    args = dict(template_generations=3, inner_generations=2, outer_loops=1, max_groups=1, edits_per_operator=4, crossovers=8, template_mutations=4)
    args.update(kw)
    return ProAPOSearch(classes, features, labels, cache, expand_type_words(TEMPLATES, ["garment"]), desc, seed=seed, **args)


def test_expand_type_words_variants():
    lib = expand_type_words(["a photo of a {}.", "art of the {}."], ["garment"])
    # baseline first, then per template: ", a type of", "word: ", and the two "photo" rewrites where possible
    assert lib == [
        "a photo of a {}.",
        "art of the {}.",
        "a photo of a {}, a type of garment.",
        "garment: a photo of a {}.",
        "a garment of a {}.",
        "a garment photo of a {}.",
        "art of the {}, a type of garment.",
        "garment: art of the {}.",
    ]
    with pytest.raises(ValueError, match="placeholder"):
        expand_type_words(["no placeholder"])


def test_elite_fitness_never_decreases_and_search_is_seeded(toy_task, hash_encoder):
    search = make_search(toy_task, hash_encoder)
    assert search.total_generations == 3 + 2
    history = [search.step() for _ in range(search.total_generations)]
    assert search.done
    best = [h["best_fitness"] for h in history]
    stage1 = [h for h in history if h["stage"] == "templates"]
    stage2 = [h for h in history if h["stage"] == "descriptions"]
    assert len(stage1) == 3 and len(stage2) == 2
    # elitism: the best fitness never decreases, also across the stage boundary: stage 2's sampled
    # starting points include "names only", which is exactly the stage-1 winner
    assert all(b >= a - 1e-4 for a, b in zip(best, best[1:]))
    again = make_search(toy_task, hash_encoder)
    again.run()
    assert again.best_class_prompts() == search.best_class_prompts()
    other = make_search(toy_task, hash_encoder, seed=1)
    other.run()
    assert other.history != search.history


def test_search_improves_on_its_initial_population(toy_task, hash_encoder):
    search = make_search(toy_task, hash_encoder, descriptions=False, template_generations=4)
    first = search.step()
    search.run()
    assert search.history[-1]["best_fitness"] >= first["best_fitness"]
    assert search.history[0]["kept_templates"] <= search.history[0]["library_size"]


def test_best_class_prompts_reproduce_the_scored_embedding(toy_task, hash_encoder):
    import torch.nn.functional as F

    search = make_search(toy_task, hash_encoder)
    search.run()
    prompts = search.best_class_prompts()
    # mean of normalised prompt embeddings, renormalised == what the fitness scored
    rebuilt = torch.stack([F.normalize(F.normalize(hash_encoder(p), dim=-1).mean(0), dim=-1) for p in prompts.values()])
    assert torch.allclose(rebuilt, search.class_embeddings(), atol=1e-5)
    assert all(p.startswith(tuple(t.format(c)[:3] for t in search.best_templates())) for c, ps in prompts.items() for p in ps)


def test_text_cache_encodes_each_prompt_once(toy_task, hash_encoder):
    search = make_search(toy_task, hash_encoder)
    search.run()
    assert len(hash_encoder.calls) == len(set(hash_encoder.calls))
    assert search.text_cache.num_encoded == len(hash_encoder.calls)


def test_resume_from_state_dict_matches_uninterrupted_run(toy_task, hash_encoder):
    full = make_search(toy_task, hash_encoder)
    full.run()
    part = make_search(toy_task, hash_encoder)
    for _ in range(4):  # stop inside stage 2
        part.step()
    state = part.state_dict()
    resumed = make_search(toy_task, hash_encoder)
    resumed.load_state_dict(state)
    resumed.run()
    assert resumed.best_class_prompts() == full.best_class_prompts()
    assert [h["best_fitness"] for h in resumed.history] == [h["best_fitness"] for h in full.history]


def test_render_prompt():
    assert render_prompt("a photo of a {}.", "dress", "It has a hem.") == "a photo of a dress. It has a hem."
    assert render_prompt(BASELINE_TEMPLATE, "dress") == "a photo of a dress."


def test_bad_inputs(toy_task, hash_encoder):
    classes, features, labels = toy_task
    cache = PromptEmbeddingCache(hash_encoder, "hash")
    with pytest.raises(ValueError, match="distinct"):
        ProAPOSearch(classes[:-1] + [classes[0]], features, labels, cache, TEMPLATES)
    with pytest.raises(ValueError, match="selection size"):
        ProAPOSearch(classes, features, labels, cache, TEMPLATES[:2], top_k=4)
    with pytest.raises(ValueError, match="lack"):
        ProAPOSearch(classes, features, labels, cache, TEMPLATES, descriptions={"c0": ["x"]})
    with pytest.raises(ValueError, match="labels"):
        ProAPOSearch(classes, features, labels + 5, cache, TEMPLATES)
    with pytest.raises(ValueError, match="top_k"):
        ProAPOSearch(classes, features, labels, cache, TEMPLATES, top_k=0)


def test_embedding_of_template_candidate_matches_prompt_ensemble(toy_task, hash_encoder):
    # a stage-1 candidate selecting templates {0, 2} gives each class the normalised mean of the two prompts
    import torch.nn.functional as F

    classes = toy_task[0]
    pool = F.normalize(hash_encoder([t.format(c) for c in classes for t in TEMPLATES[:3]]), dim=-1).view(10, 3, -1)
    mask = torch.tensor([[[True, False, True]]])
    emb = class_embeddings_from_masks(pool, mask)[0]
    expected = F.normalize(pool[:, 0] + pool[:, 2], dim=-1)
    assert torch.allclose(emb, expected, atol=1e-6)


@pytest.mark.gpu
def test_search_on_cuda_matches_cpu(toy_task, hash_encoder):
    classes, features, labels = toy_task
    cpu = make_search(toy_task, hash_encoder)
    cpu.run()
    gpu = make_search((classes, features.cuda(), labels.cuda()), hash_encoder)
    gpu.run()
    assert gpu.features.is_cuda
    assert gpu.class_embeddings().is_cuda
    # same seeded choices; fitness equal up to float rounding of the batched products
    assert [h["best_fitness"] for h in gpu.history] == pytest.approx([h["best_fitness"] for h in cpu.history], rel=1e-4, abs=1e-3)
    assert gpu.best_class_prompts() == cpu.best_class_prompts()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dataset": "mnist"}, "dataset must be"),
        ({"description_source": "gpt4"}, "description_source"),
        ({"description_source": "json"}, "description_file"),
        ({"shots": 0}, "shots"),
        ({"template_library_name": "all"}, "template_library"),
    ],
)
def test_prepare_search_rejects_bad_input_before_loading_anything(kwargs, match, monkeypatch):
    import vlkit.models.backbones as backbones

    from prompts_evo.fewshot import prepare_search

    def boom(*a, **k):
        raise AssertionError("the backbone must not be built for bad input")

    monkeypatch.setattr(backbones, "create_backbone", boom)
    with pytest.raises(ValueError, match=match):
        prepare_search(**kwargs)
