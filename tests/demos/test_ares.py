"""The ARES Gradio demo builds, and its scoring function runs on the tiny random model."""

import re

import pytest


def test_build_demo_has_the_controls():
    import gradio as gr

    from demos.ares import build_demo

    demo = build_demo()
    assert isinstance(demo, gr.Blocks)
    labels = {getattr(block, "label", None) for block in demo.blocks.values()}
    assert {"problem", "reference answer", "model", "difficulty bucket", "HWE target", "alpha"} <= labels


def test_analyze_marks_hwe_tokens_and_scores():
    from demos.ares import analyze, render_tokens

    html_tokens, summary = analyze("What is 2 + 2?", "4", "tiny-random-lm", "", "easy", 0, 0.5, 1.0, 16, 0)
    n_spans = html_tokens.count("<span title=")
    assert 1 <= n_spans <= 16
    # a fresh model has no trained threshold: the answer's own 95th percentile marks about 5% of tokens (>= 1)
    assert html_tokens.count("outline:2px solid #c00;font-weight:bold") >= 1
    reward = float(re.search(r"\*\*([+-]\d\.\d+)\*\*", summary).group(1))
    # a random model is wrong: as an easy problem the reward is 0 + 0.6 * 0.5 * sigma in [0.15, 0.3]
    assert 0.15 <= reward <= 0.3
    # the window after a HWE token is underlined (window = next 4 tokens)
    out = render_tokens(["a", "b", "c", "d", "e", "f"], [0.1] * 6, [True, False, False, False, False, False], 4, False)
    assert out.count("border-bottom:3px") == 4 + 1  # 4 spans + the legend
    with pytest.raises(ValueError, match="problem"):
        analyze(" ", "4", "tiny-random-lm", "", "easy", 0, 0.5, 1.0, 8, 0)


def test_the_default_model_is_smollm2_and_the_page_names_it():
    import gradio as gr

    from demos.ares import DEFAULT_MODEL, build_demo, describe_model

    demo = build_demo()
    model = next(b for b in demo.blocks.values() if getattr(b, "label", None) == "model")
    assert isinstance(model, gr.Dropdown) and model.value == DEFAULT_MODEL == "smollm2-135m-instruct"
    about = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown) and "**Model:**" in (b.value or "")]
    assert len(about) == 1 and "SmolLM2-135M-Instruct" in about[0] and "**Weights:**" in about[0]
    assert "untrained" not in about[0] and "**Data:**" in about[0]
    # the random test model is offered, and labelled, only when picked
    assert describe_model("tiny-random-lm").startswith("**untrained**")
    assert "`ares.ckpt`" in describe_model("smollm2-135m-instruct", "ares.ckpt")


@pytest.mark.parametrize(
    "correct, count, bucket, target, alpha, sign",
    [
        (0.0, 1, "easy", 0, 0.5, "positive"),    # wrong: a bonus, half of it at the band (sigma(0) = 1/2)
        (None, 9, "medium", 2, 0.5, "positive"),  # no reference: counted as wrong
        (1.0, 5, "easy", 2, 0.5, "negative"),     # correct, over-thinking an easy problem
        (1.0, 3, "easy", 2, 0.5, "zero"),         # correct, within target + margin
        (1.0, 0, "medium", 4, 0.5, "negative"),   # correct, too far below a medium target
        (1.0, 4, "hard", 4, 0.5, "positive"),     # correct hard answer that reasons
        (1.0, 0, "hard", 6, 0.5, "negative"),     # correct hard answer below target - margin
        (0.0, 7, "hard", 2, 0.0, "zero"),         # alpha 0: no entropy term at all
    ],
)
def test_the_reward_is_explained_with_the_terms_and_the_sign_it_has(correct, count, bucket, target, alpha, sign):
    import torch

    from demos.ares import BUCKETS, explain_reward
    from vlkit.functional.aepo import shaped_rewards

    b = BUCKETS.index(bucket)
    targets = torch.zeros(3)
    targets[b] = float(target)
    reward = shaped_rewards(torch.tensor([correct or 0.0]), torch.tensor([float(count)]), targets, torch.tensor([b]),
                            torch.full((3,), float(alpha))).item()
    text = explain_reward(correct, count, bucket, target, alpha, reward)
    term = reward - (correct or 0.0)
    assert f"**entropy term {term:+.3f}**" in text and f"**accuracy term {correct or 0.0:.0f}**" in text
    assert f"**{sign}**" in text  # the sign the words give is the one the reward has
    assert {"positive": term > 0, "negative": term < 0, "zero": abs(term) < 1e-9}[sign]
    # hand-derived: a wrong easy answer with 1 HWE token, target 0: m = max(1, 0.15) = 1, cap = 0.5 * 1,
    # bonus 0.6 * cap * sigma(max(1 - 0 - 1, 0) / 2) = 0.6 * 0.5 * 0.5 = 0.15
    if (correct, count, bucket, target) == (0.0, 1, "easy", 0):
        assert abs(term - 0.15) < 1e-6 and "σ(0) = ½" in text


def test_analyze_tells_progress_and_breaks_the_reward_down():
    from demos.ares import analyze

    calls = []
    _, summary = analyze("What is 2 + 2?", "4", "tiny-random-lm", "", "medium", 2, 0.5, 1.0, 8, 0,
                         progress=lambda fraction, desc=None: calls.append((fraction, desc)))
    assert [d.split(" ")[0] for _, d in calls] == ["loading", "sampling"] and "tiny-random-lm" in calls[0][1]
    reward = float(re.search(r"\*\*([+-]\d\.\d+)\*\*", summary).group(1))
    entropy = float(re.search(r"\*\*entropy term ([+-]\d\.\d+)\*\*", summary).group(1))
    accuracy = float(re.search(r"\*\*accuracy term (\d)\*\*", summary).group(1))
    assert abs(reward - (accuracy + entropy)) < 1.5e-3  # the parts add up to the total shown


@pytest.mark.slow
def test_smollm2_default_answers_readably_and_is_scored():
    """The default model end to end (about 30 s to convert the packaged GGUF the first time, then seconds)."""
    from demos.ares import DEFAULT_MODEL, analyze

    html_tokens, summary = analyze("What is 12 * 7 + 5?", "89", DEFAULT_MODEL, "", "medium", 2, 0.5, 0.7, 48, 0)
    pieces = re.findall(r'<span title="H=[^"]*" style="[^"]*">(.*?)</span>', html_tokens)
    text = "".join(pieces)
    assert 1 <= len(pieces) <= 48
    # a pretrained instruction model writes mostly ordinary characters (a random one writes arbitrary tokens)
    assert sum(c.isascii() for c in text) / max(len(text), 1) > 0.9, text
    reward = float(re.search(r"\*\*([+-]\d\.\d+)\*\*", summary).group(1))
    entropy = float(re.search(r"\*\*entropy term ([+-]\d\.\d+)\*\*", summary).group(1))
    accuracy = float(re.search(r"\*\*accuracy term (\d)\*\*", summary).group(1))
    assert abs(reward - (accuracy + entropy)) < 1.5e-3 and -0.5 <= entropy <= 0.4
