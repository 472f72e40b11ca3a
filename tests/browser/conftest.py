"""The app served in-process on 127.0.0.1 (a free port) with tiny settings, and Debian's Chromium driven by
Playwright (never Playwright's own browser download)."""

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


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    pytest.importorskip("gradio")
    from demos.app import launch

    work = tmp_path_factory.mktemp("app")
    app = launch(
        host="127.0.0.1", port=_free_port(), prevent_thread_lock=True, max_file_size=MAX_FILE_SIZE,
        tfup_backbone="tiny-random", tfup_subset_size=100, cache_dir=str(work / "cache"), concurrency_limit=2,
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
