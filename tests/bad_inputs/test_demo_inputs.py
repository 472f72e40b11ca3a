"""Bad input through the demo handlers (the third interface, beside the Python API and the CLI).

A Gradio client can send any value for any component, so every handler checks what it receives before any
model is built: each case asserts the exception type and a phrase of its message. The last tests check the
app-wide guard: a failure reaches the visitor as a ``gr.Error`` without server paths or tracebacks.
"""

from __future__ import annotations

import math

import pytest

from vlkit.errors import ConfigError

ARES_OK = dict(problem="What is 2 + 3?", answer="5", model_name="tiny-random-lm", checkpoint="", bucket="easy",
               target=1.0, alpha=0.5, temperature=1.0, max_new_tokens=8, seed=0)


@pytest.mark.parametrize(
    "change, phrase",
    [
        (dict(problem=""), "problem must be a non-empty question"),
        (dict(problem="   "), "problem must be a non-empty question"),
        (dict(bucket="impossible"), "bucket must be one of"),
        (dict(model_name="/etc/passwd"), "model must be one of"),
        (dict(model_name="Qwen/Qwen2.5-7B"), "model must be one of"),
        (dict(target=-1.0), "target must be >= 0"),
        (dict(target=math.nan), "target must be a finite number"),
        (dict(alpha=math.nan), "alpha must be a finite number"),
        (dict(alpha=-0.5), "alpha must be >= 0"),
        (dict(temperature=0.0), "temperature must be > 0"),
        (dict(temperature=-1.0), "temperature must be > 0"),
        (dict(temperature=math.inf), "temperature must be a finite number"),
        (dict(max_new_tokens=0), "max_new_tokens must be >= 1"),
        (dict(max_new_tokens=2.5), "max_new_tokens must be a whole number"),
        (dict(max_new_tokens=10**6), "max_new_tokens must be >= 1 and <= 1024"),
        (dict(seed=-3), "seed must be >= 0"),
        (dict(seed="abc"), "seed must be a whole number"),
        (dict(checkpoint="http://127.0.0.1:1/x.ckpt"), "without --checkpoint-dir"),
    ],
)
def test_ares_handler_refuses(change, phrase):
    from demos.ares import analyze

    with pytest.raises(ConfigError, match=phrase):
        analyze(**{**ARES_OK, **change})


def test_ares_handler_accepts_the_boundaries():
    """temperature and max_new_tokens at their allowed edges, slider floats for whole numbers."""
    from demos.ares import analyze

    html, summary = analyze(**{**ARES_OK, "temperature": 10.0, "max_new_tokens": 1.0, "seed": 0.0, "target": 0.0})
    assert "<span" in html and "reward" in summary.lower()


PROAPO_OK = dict(dataset="fashion-mnist", backbone="offline-lite0-minilm", seed=0, template_generations=2,
                 description_generations=0, description_source="templates")


@pytest.mark.parametrize(
    "change, phrase",
    [
        (dict(dataset="imagefolder:/etc"), "dataset must be one of"),
        (dict(dataset="fashion_mnist"), "closest: fashion-mnist"),
        (dict(backbone="/tmp/evil.pt"), "backbone must be one of"),
        (dict(backbone="ViT-B-32/openai"), "backbone must be one of"),
        (dict(description_source="llm:/tmp/model"), "description_source must be one of"),
        (dict(template_generations=0), "template_generations must be >= 1"),
        (dict(template_generations=1.5), "template_generations must be a whole number"),
        (dict(template_generations=1000), "template_generations must be >= 1 and <= 10"),
        (dict(description_generations=-1), "description_generations must be >= 0"),
        (dict(seed=-1), "seed must be >= 0"),
    ],
)
def test_proapo_handler_refuses(change, phrase):
    from demos.proapo import run_search

    # run_search is a generator: the checks run on the first next(), before any image is encoded
    with pytest.raises(ConfigError, match=phrase):
        next(run_search(**{**PROAPO_OK, **change}))


def test_proapo_choices_are_the_listed_ones():
    from demos import proapo

    assert PROAPO_OK["dataset"] in proapo.DATASETS and PROAPO_OK["backbone"] in proapo.BACKBONES


@pytest.fixture(scope="module")
def recommender():
    from demos.minionerec import load_recommender

    return load_recommender()  # the untrained tiny model on synthetic data


@pytest.mark.parametrize(
    "text, phrase",
    [
        ("", "the history is empty"),
        ("   \n  ", "the history is empty"),
        ("no such title anywhere 12345", "unknown item title"),
    ],
)
def test_minionerec_titles_refused(recommender, text, phrase):
    from demos.minionerec import _resolve_titles

    _, data = recommender
    with pytest.raises(ConfigError, match=phrase):
        _resolve_titles(text, data)


@pytest.mark.parametrize("history, phrase", [([], "history"), (["not-an-item"], "not-an-item")])
def test_minionerec_recommend_table_refuses(recommender, history, phrase):
    from demos.minionerec import recommend_table

    module, data = recommender
    with pytest.raises(ConfigError, match=phrase):
        recommend_table(module, data, history)


def test_minionerec_unknown_user_is_a_clear_error(recommender):
    import gradio as gr

    from demos.minionerec import build_demo

    demo = build_demo()
    by_user = next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "by_user")
    with pytest.raises(ConfigError, match="user must be one of"):
        by_user("../../etc/passwd")
    assert isinstance(demo, gr.Blocks)


@pytest.mark.parametrize("class_name", ["", "Trouser ", "../trouser", "cat"])
def test_repri_example_refuses_unknown_classes(class_name):
    from demos.repri import example

    with pytest.raises(ConfigError, match="class_name must be one of"):
        example(class_name)


def test_repri_run_without_query_is_refused():
    import numpy as np

    from demos.repri import _run

    support = np.zeros((32, 32, 3), dtype=np.uint8)
    layer = np.zeros((32, 32, 4), dtype=np.uint8)
    layer[4:10, 4:10] = (255, 0, 0, 160)
    with pytest.raises(ConfigError, match="query image"):
        _run({"background": support, "layers": [layer], "composite": support}, None)


# ---------------------------------------------------------------------------------- the app-wide guard
def test_public_message_hides_paths_and_internals():
    from demos._safety import INTERNAL_ERROR, public_message

    assert public_message(ValueError("cannot read /tmp/gradio/ab12/upload.png: truncated")) == "cannot read <path>: truncated"
    assert public_message(ConfigError("lr must be > 0, got -0.1")) == "lr must be > 0, got -0.1"
    assert public_message(KeyError("/srv/secret/thing")) == INTERNAL_ERROR
    assert public_message(RuntimeError("CUDA out of memory at /opt/app/x.py")) == INTERNAL_ERROR


def test_guard_handlers_turns_failures_into_clean_gradio_errors():
    import gradio as gr

    from demos._safety import INTERNAL_ERROR, guard_handlers

    def user_error(x):
        raise ConfigError(f"x must be > 0, got {x} (file /home/op/data/x.bin)")

    def bug(x):
        return {}[x]

    def stream(x):
        yield "first"
        raise ValueError("half way at /var/tmp/run/state.json")

    with gr.Blocks() as demo:
        box, out = gr.Textbox(), gr.Textbox()
        for fn in (user_error, bug, stream):
            gr.Button(fn.__name__).click(fn, box, out)
    guard_handlers(guard_handlers(demo))  # idempotent
    fns = {f.fn.__wrapped__.__name__: f.fn for f in demo.fns.values()}
    with pytest.raises(gr.Error) as err:
        fns["user_error"](-1)
    assert err.value.message == "x must be > 0, got -1 (file <path>)"
    with pytest.raises(gr.Error) as err:
        fns["bug"]("k")
    assert err.value.message == INTERNAL_ERROR
    gen = fns["stream"]("x")
    assert next(gen) == "first"
    with pytest.raises(gr.Error) as err:
        next(gen)
    assert err.value.message == "half way at <path>"


def test_the_app_guards_every_handler_and_hides_raw_errors():
    from demos.app import build_app

    app = build_app(tabs=["ares", "minionerec"])
    assert app.fns and all(getattr(f.fn, "_vlkit_handler_guard", False) for f in app.fns.values() if f.fn is not None)
