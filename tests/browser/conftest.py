"""The app served in-process on 127.0.0.1 (a free port) with tiny settings, and Debian's Chromium driven by
Playwright (never Playwright's own browser download). The MiniOneRec tab runs its default path (the trained
demo asset) on a recommender trained for the session on the synthetic data."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "results" / "screenshots"
CHROMIUM = os.environ.get("VLKIT_CHROMIUM", "/usr/bin/chromium")
MAX_FILE_SIZE = "1mb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# a short SFT run (the real pipeline: RQ-VAE IDs, then SFT through the CLI) on the 48-item synthetic data
TINY_BUILD = dict(epochs=1, overrides=("--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1"))


@pytest.fixture(scope="session")
def tiny_build() -> dict:
    """The arguments of the short synthetic build (``build_minionerec_assets`` / the tab's build button)."""
    return dict(TINY_BUILD)


@pytest.fixture(scope="session")
def minionerec_assets(tmp_path_factory) -> Path:
    """A demo-assets folder holding a recommender trained by ``demos.assets.build_minionerec_assets`` on the
    synthetic data (one short epoch): the MiniOneRec tab's default path, without the big Industrial build."""
    pytest.importorskip("gradio")
    from demos.assets import build_minionerec_assets

    root = tmp_path_factory.mktemp("demo-assets")
    build_minionerec_assets("synthetic", root, **TINY_BUILD)
    return root


@pytest.fixture(scope="session")
def app_url(tmp_path_factory, minionerec_assets):
    pytest.importorskip("gradio")
    from demos.app import launch

    work = tmp_path_factory.mktemp("app")
    app = launch(
        host="127.0.0.1", port=_free_port(), prevent_thread_lock=True, max_file_size=MAX_FILE_SIZE,
        tfup_backbone="tiny-random", tfup_subset_size=100, cache_dir=str(work / "cache"), concurrency_limit=2,
        minionerec_dataset="synthetic", assets_dir=str(minionerec_assets),
    )
    try:
        assert app.server_name == "127.0.0.1"
        yield app.local_url.rstrip("/")
    finally:
        app.close()


@pytest.fixture(autouse=True)
def _in_app_workdir(request, tmp_path_factory):
    """Each browser test runs with the working directory in a temporary folder (ProAPO's demo caches under
    ./.cache/vlkit), restored afterwards, so later tests of the session see the repository as usual."""
    work = tmp_path_factory.getbasetemp() / "app-cwd"
    work.mkdir(exist_ok=True)
    old = os.getcwd()
    os.chdir(work)
    try:
        yield
    finally:
        os.chdir(old)


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no system Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(180_000)  # CPU-only CI on a loaded machine: first calls build models
    page.goto(app_url)
    yield page
    page.close()


@pytest.fixture(scope="session")
def save_screenshot():
    """``save_screenshot(page, tab)`` -> results/screenshots/<tab>.png (written atomically)."""

    def save(page, tab: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{tab}.png"
        tmp = SCREENSHOTS / f".{tab}.tmp.png"
        page.screenshot(path=str(tmp), full_page=True)
        os.replace(tmp, path)  # never a half-written screenshot under the real name
        return path

    return save


@pytest.fixture
def serve():
    """``serve(blocks) -> url``: ``blocks`` queued and served on 127.0.0.1 (a free port) for this test only."""
    served = []

    def start(blocks) -> str:
        blocks.queue().launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True)
        served.append(blocks)
        return blocks.local_url.rstrip("/")

    yield start
    for blocks in served:
        blocks.close()
