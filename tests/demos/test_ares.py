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
