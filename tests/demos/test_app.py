"""The one app: a tab per method built from each demos/<stem>.py, queued, uploads restricted."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_build_app_has_one_tab_per_method_with_each_demo_inside(tmp_path):
    gr = pytest.importorskip("gradio")
    from demos.app import IMAGE_FILE_TYPES, TABS, build_app

    app = build_app(tfup_backbone="tiny-random", tfup_subset_size=50, cache_dir=str(tmp_path), concurrency_limit=3, max_queue_size=7)
    assert isinstance(app, gr.Blocks)
    tabs = [b for b in app.blocks.values() if isinstance(b, gr.Tab)]
    assert [(t.id, t.label) for t in tabs] == [(k, title) for k, (title, _) in TABS.items()]
    labels = {getattr(b, "label", None) for b in app.blocks.values()}
    # one control from each demo made it into the app
    assert {"image (optional upload)", "description source", "Query image", "test user", "difficulty bucket"} <= labels
    # ... and laid out exactly once (a demo built inside the app's context renders itself there at once,
    # and .render() in its tab then shows it a second time)
    seen: list[int] = []

    def walk(node):
        seen.append(node["id"])
        for child in node.get("children", []):
            walk(child)

    walk(app.get_config_file()["layout"])
    assert len(seen) == len(set(seen)), "a block appears twice in the page layout"
    # every event of every demo is wired and goes through the queue with the app's concurrency limit
    names = {fn.name for fn in app.fns.values()}
    assert {"run", "run_search", "_run", "by_user", "analyze"} <= names
    assert app.enable_queue and app._queue.max_size == 7
    assert all(fn.queue for fn in app.fns.values())
    assert {app._queue.default_concurrency_limit} == {3}
    # the only upload components are image components; file-taking ones accept only image extensions
    uploads = [b for b in app.blocks.values() if isinstance(b, (gr.Image, gr.ImageEditor)) and b.interactive is not False]
    assert len(uploads) >= 3  # TFUP upload, RePRI support editor and query
    for block in app.blocks.values():
        if isinstance(block, (gr.File, gr.UploadButton)):
            assert block.file_types == IMAGE_FILE_TYPES


def test_build_app_subset_and_bad_arguments():
    gr = pytest.importorskip("gradio")
    from demos.app import build_app

    app = build_app(tabs=["ares"])
    assert [b.label for b in app.blocks.values() if isinstance(b, gr.Tab)] == ["ARES"]
    with pytest.raises(ValueError, match="tabs must be"):
        build_app(tabs=["nope"])
    with pytest.raises(ValueError, match="concurrency_limit"):
        build_app(tabs=["ares"], concurrency_limit=0)


def test_launch_defaults_to_localhost_and_checks_arguments():
    import inspect

    from demos.app import launch

    params = inspect.signature(launch).parameters
    assert params["host"].default == "127.0.0.1"
    with pytest.raises(ValueError, match="port"):
        launch(port=70000)
    with pytest.raises(ValueError, match="host"):
        launch(host="")


def test_python_m_demos_help_lists_the_options():
    out = subprocess.run([sys.executable, "-m", "demos", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--host" in out.stdout and "--max-file-size" in out.stdout and "127.0.0.1" in out.stdout
