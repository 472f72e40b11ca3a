"""Every tab of the app in a real browser: load it, do its main interaction, check what the page shows
(the model, its weights and data named; trained models by default, "untrained" only where one is picked;
progress while long work runs), save a screenshot under results/screenshots/<tab>.png."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.browser

CLASSES = ["T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


def _open_tab(page, title: str):
    page.get_by_role("tab", name=title).click()
    panel = page.get_by_role("tabpanel")
    assert panel.count() == 1  # one panel shown, the selected tab's
    return panel


def _choose(panel, page, label: str, option: str) -> None:
    panel.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).click()


def _set_number(panel, label: str, value) -> None:
    box = panel.get_by_role("spinbutton", name=label)
    box.fill(str(value))
    box.press("Enter")


def test_tfup_tab_classifies_a_test_image(page, save_screenshot):
    panel = _open_tab(page, "TFUP")
    panel.get_by_role("button", name="Classify").click()
    summary = panel.get_by_text(re.compile("TFUP says"))
    summary.wait_for()
    text = summary.inner_text()
    match = re.search(r"true class: (.+?); zero-shot says (.+?), TFUP says (.+)$", text.strip())
    assert match, text
    assert all(name.strip() in CLASSES for name in match.groups()), match.groups()
    # the gallery shows the 6 cache entries that moved the prediction, each captioned with its pseudo-label
    panel.get_by_text(re.compile(r"pseudo-label .+ \(\+")).first.wait_for()
    assert panel.get_by_text(re.compile(r"pseudo-label .+ \(\+")).count() >= 1
    # ... and no caption is cut: each one's text fits in its box
    cut = page.evaluate("""() => [...document.querySelectorAll('[role=tabpanel] *')]
        .filter(e => e.children.length === 0 && /pseudo-label .+ \\(\\+/.test(e.textContent))
        .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)""")
    assert cut == [], cut
    # the input is shown at a readable size: the 28 px image enlarged to 280 px, drawn at least 200 px wide
    drawn = page.evaluate("""() => [...document.querySelectorAll('[role=tabpanel] img')]
        .filter(i => i.naturalWidth === 280).map(i => i.getBoundingClientRect().width)""")
    assert drawn and max(drawn) >= 200, drawn
    about = panel.inner_text()
    assert "Model:" in about and "Data: Fashion-MNIST" in about and "untrained · Model:" in about  # tiny-random: labelled
    save_screenshot(page, "tfup")


def test_proapo_tab_runs_a_search_and_streams_the_result(page, save_screenshot):
    panel = _open_tab(page, "ProAPO")
    _choose(panel, page, "backbone", "tiny-random")
    _choose(panel, page, "description source", "none")
    _set_number(panel, "number input for template generations", 2)
    _set_number(panel, "number input for description generations", 0)
    panel.get_by_role("button", name="Run search").click()
    panel.get_by_text(re.compile("final test acc")).wait_for()
    text = panel.inner_text()  # the status line is markdown with bold pieces: read the whole panel
    assert "generation 2/2" in text, text
    accuracy = float(re.search(r"final test acc ([\d.]+)%", text).group(1))
    assert 0.0 <= accuracy <= 100.0
    # the best-prompts table has one row per class (plus the header row)
    grid = panel.get_by_role("grid", name="best prompts per class")
    assert grid.get_by_role("row").count() == 1 + len(CLASSES)
    cells = grid.get_by_role("row").nth(1).inner_text().splitlines()  # class, #prompts, prompts
    assert cells[0].strip() in CLASSES and int(cells[1]) >= 1, cells
    save_screenshot(page, "proapo")


def test_repri_tab_segments_an_example_episode(page, save_screenshot):
    panel = _open_tab(page, "RePRI")
    panel.get_by_role("button", name="Load example").click()
    panel.get_by_role("button", name="Remove Image").wait_for()  # the query image is in place
    page.wait_for_timeout(500)
    panel.get_by_role("button", name="Segment").click()
    info = panel.get_by_text(re.compile("Foreground proportion"))
    info.wait_for()
    text = info.inner_text()
    numbers = [float(x) for x in re.findall(r"(\d\.\d{3})", text)]
    assert len(numbers) == 3, text  # initial estimate, re-estimate, predicted coverage
    assert all(0.0 <= x <= 1.0 for x in numbers)
    assert numbers[2] > 0.0  # RePRI marked some pixels of a query that holds the class
    # the example's ground truth beside the predictions, with both IoUs; outputs at 384 px, not 128
    truth = panel.get_by_text(re.compile("IoU with the ground truth"))
    truth.wait_for()
    ious = [float(x) for x in re.findall(r"(\d+\.\d) %", truth.inner_text())]
    assert len(ious) == 3 and all(0.0 <= x <= 100.0 for x in ious), truth.inner_text()
    # RePRI, prototype baseline and ground truth: three images of at least 384 px once loaded
    page.wait_for_function("""() => [...document.querySelectorAll('[role=tabpanel] img')]
        .filter(i => i.complete && i.naturalWidth >= 384).length >= 3""")
    assert "EfficientNet-Lite0" in panel.inner_text()  # the model and data are named
    save_screenshot(page, "repri")


def test_minionerec_tab_recommends_for_a_user(page, save_screenshot):
    panel = _open_tab(page, "MiniOneRec")
    panel.get_by_role("button", name="recommend for user").click()
    panel.get_by_text(re.compile("held-out next item")).wait_for()
    grid = panel.get_by_role("grid", name="top-10 (constrained beam search)")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[role=tabpanel] [role=grid]')].some(g => g.querySelectorAll('[role=row]').length >= 11)"
    )
    rows = grid.get_by_role("row")
    assert rows.count() == 11  # header + top-10
    first = rows.nth(1).inner_text()
    assert re.search(r"<a_\d+><b_\d+>", first), first  # a semantic ID from the session's RQ-VAE stage
    history = panel.get_by_role("textbox", name="history (one title per line)").input_value()
    assert len(history.splitlines()) >= 1  # the user's history was filled in
    # the default tab: the trained recommender, named with its weights and data, never "untrained"
    text = panel.inner_text()
    assert "Model:" in text and "Weights: trained by make demo-assets" in text and "Data:" in text, text
    assert "untrained" not in text.lower()
    assert not panel.get_by_role("button", name="build the trained recommender").is_visible()
    save_screenshot(page, "minionerec")


def test_minionerec_builds_its_trained_recommender_on_first_use_with_progress(browser, serve, tiny_build, tmp_path,
                                                                             save_screenshot):
    """No demo asset yet: the tab says so, and its button trains one through the pipeline while the page shows
    progress; afterwards the tab is the trained default."""
    from demos.minionerec import build_demo

    url = serve(build_demo(dataset="synthetic", assets_dir=str(tmp_path), build_epochs=tiny_build["epochs"],
                           build_overrides=tiny_build["overrides"]))
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(300_000)
    try:
        page.goto(url)
        page.get_by_text(re.compile("is not built yet")).wait_for()
        assert "untrained" not in page.inner_text("body").lower()
        page.get_by_role("button", name="build the trained recommender").click()
        page.get_by_text(re.compile(r"semantic IDs|MiniOneRec SFT")).first.wait_for()  # the progress text
        save_screenshot(page, "minionerec-building")
        page.get_by_text(re.compile("Weights: trained by")).wait_for()
        assert not page.get_by_role("button", name="build the trained recommender").is_visible()
        page.get_by_role("button", name="recommend for user").click()
        page.get_by_text(re.compile("held-out next item")).wait_for()
    finally:
        page.close()


def test_ares_tab_samples_and_scores_an_answer(page, save_screenshot):
    panel = _open_tab(page, "ARES")
    # the default model is the pretrained SmolLM2, named with its weights; the random one only when picked
    text = panel.inner_text()
    assert "SmolLM2-135M-Instruct" in text and "Weights:" in text and "untrained" not in text.lower(), text
    _choose(panel, page, "model", "tiny-random-lm (untrained: random weights)")  # SmolLM2 runs in the slow tier
    panel.get_by_text(re.compile("untrained · Model:")).wait_for()
    _set_number(panel, "number input for max new tokens", 16)
    panel.get_by_role("button", name="sample and score").click()
    panel.get_by_text(re.compile("AEPO reward")).first.wait_for()
    text = panel.inner_text()
    reward = float(re.search(r"AEPO reward.*?([+-]\d\.\d{3})", text, re.S).group(1))
    # a random model answers wrongly (accuracy 0); the entropy term of a medium problem is bounded by alpha
    assert -0.5 <= reward <= 0.5, text
    spans = page.locator("[role=tabpanel] span[title^='H=']")
    assert 1 <= spans.count() <= 16  # one span per sampled token, at most max new tokens
    # the reward in words: its two terms and why the entropy term has its sign
    assert "accuracy term" in text and "entropy term" in text and re.search(r"hence the (positive|negative) sign|is zero", text)
    save_screenshot(page, "ares")
