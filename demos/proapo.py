"""ProAPO demo: pick a dataset and backbone, run a short prompt search, watch the fitness curve and the
best prompts per class update after every generation.

    python demos/proapo.py            # http://127.0.0.1:7860
"""

from __future__ import annotations

DATASETS = ["fashion-mnist"]
BACKBONES = ["offline-lite0-minilm", "tiny-random"]
SOURCES = ["templates", "llm", "none"]
ABOUT = ("**Model:** the backbone picked below: `offline-lite0-minilm` (EfficientNet-Lite0 + all-MiniLM-L6-v2, "
         "pretrained, packaged: no download) or `tiny-random` (**untrained**, random weights: the wiring only); "
         "ProAPO searches prompts, it trains no weights.  \n**Weights:** frozen.  \n**Data:** Fashion-MNIST: one "
         "labelled image per class for the fitness, a held-out slice and a test subset of the test split (shown, "
         "never used for selection). The first run encodes the images once (a few minutes on CPU, with progress).")


def run_search(dataset: str, backbone: str, seed: int, template_generations: int, description_generations: int,
               description_source: str, library: str = "imagenet80", test_size: int = 1000, heldout_size: int = 200,
               progress=None):
    """Generator for the UI: yields (status markdown, fitness figure, best-prompts rows) after each generation;
    ``progress(fraction, desc=...)`` (the demo's ``gr.Progress``) hears about the first encoding."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prompts_evo import SearchSettings, prepare_search

    from vlkit.errors import check_choice, check_whole_number

    # a Gradio client can send any string: only the listed choices reach the kit (never a path or hub id)
    check_choice("dataset", dataset, DATASETS)
    check_choice("backbone", backbone, BACKBONES)
    check_choice("description_source", description_source, SOURCES)
    check_whole_number("template_generations", template_generations, low=1, high=10)
    check_whole_number("description_generations", description_generations, low=0, high=6)
    check_whole_number("seed", seed, low=0)
    if progress is not None:
        progress(0.0, desc=f"encoding the images and prompts with {backbone} (cached after the first run)")
    run = prepare_search(
        backbone, dataset, shots=1, seed=int(seed), template_library_name=library, description_source=description_source,
        heldout_size=int(heldout_size), test_size=int(test_size),
        settings=SearchSettings(template_generations=int(template_generations), inner_generations=int(description_generations)),
    )
    search = run.search
    base = run.accuracy(run.single_template_embeddings(), "test")
    while not search.done:
        record = search.step()
        fig, ax = plt.subplots(figsize=(6, 3))
        gens = [h["generation"] for h in search.history]
        ax.plot(gens, [h["best_fitness"] for h in search.history], marker="o", label="best")
        ax.plot(gens, [h["mean_fitness"] for h in search.history], marker=".", alpha=0.6, label="mean")
        ax.set_xlabel("generation")
        ax.set_ylabel("fitness (1 shot / class)")
        ax.legend(loc="lower right")
        fig.tight_layout()
        held = run.accuracy(search.class_embeddings(), "heldout")
        status = (
            f"**generation {record['generation']}/{search.total_generations}** ({record['stage']}) · "
            f"best fitness {record['best_fitness']:.2f} · shot acc {record['best_top1']:.0f}% · "
            f"held-out acc {held:.1f}% · single-template test acc {base:.1f}%"
        )
        if search.done:
            status += f" · **final test acc {run.accuracy(search.class_embeddings(), 'test'):.1f}%**"
        rows = [[c, len(p), " | ".join(p[:3])] for c, p in search.best_class_prompts().items()]
        yield status, fig, rows
        plt.close(fig)


def build_demo():
    """The Gradio app (no launch)."""
    import gradio as gr

    def handler(dataset, backbone, seed, template_generations, description_generations, description_source,
                progress=gr.Progress(track_tqdm=True)):
        """:func:`run_search` with the page's progress bar (the encoders' tqdm bars show in it)."""
        yield from run_search(dataset, backbone, seed, template_generations, description_generations,
                              description_source, progress=progress)

    handler.__name__ = "run_search"  # the event's name, as before

    with gr.Blocks(title="ProAPO prompt search") as demo:
        gr.Markdown(
            "# ProAPO: evolutionary prompt search\n"
            "Templates first, then class-specific descriptions; the fitness sees only one labelled image per "
            "class. Held-out and test accuracy are shown, never used for selection."
        )
        gr.Markdown(ABOUT)
        with gr.Row():
            dataset = gr.Dropdown(DATASETS, value=DATASETS[0], label="dataset")
            backbone = gr.Dropdown(BACKBONES, value=BACKBONES[0], label="backbone")
            source = gr.Dropdown(SOURCES, value="templates", label="description source")
        with gr.Row():
            seed = gr.Number(value=0, precision=0, label="seed")
            tgens = gr.Slider(1, 10, value=4, step=1, label="template generations")
            dgens = gr.Slider(0, 6, value=2, step=1, label="description generations")
        start = gr.Button("Run search", variant="primary")
        status = gr.Markdown()
        curve = gr.Plot(label="fitness curve")
        table = gr.Dataframe(headers=["class", "#prompts", "best prompts (first 3)"], label="best prompts per class")
        start.click(handler, [dataset, backbone, seed, tgens, dgens, source], [status, curve, table])
    return demo


if __name__ == "__main__":
    build_demo().launch()
