"""One Gradio app with a tab per method, each tab the method's own ``demos/<stem>.py`` ``build_demo()``.

    vlkit demo                                   # http://127.0.0.1:7860, this machine only
    python -m demos --port 7861                  # the same app
    vlkit demo --checkpoint-dir runs/ckpts       # the ARES tab offers the *.ckpt files in runs/ckpts
    vlkit demo --host 0.0.0.0 --auth user:pass   # reachable from other machines, behind a login

Safety (``demos/_safety.py`` holds the checks):

* Network: binds 127.0.0.1. Any other address needs ``--auth USER:PASSWORD`` (Gradio's login) or a
  deliberate ``--no-auth``; otherwise the launch is refused before anything is served (exit 2).
* Checkpoints: a visitor picks a checkpoint *name* from a dropdown of the ``*.ckpt`` files directly in
  the operator's ``--checkpoint-dir``; the server checks the name again (no URL, no absolute path, no
  ``..``, no separator, symlinks must stay inside the folder) and reads the file with
  ``weights_only=True`` (``vlkit.checkpoints.load_checkpoint``), refusing another method's checkpoint.
  Without ``--checkpoint-dir`` no checkpoint can be loaded.
* Uploads: limited in size (``max_file_size``); the only upload components are image components, and
  each uploaded image is decoded and verified by Pillow (PNG, JPEG, WebP, BMP, GIF; at most 40
  megapixels) before any handler sees it. Errors shown to visitors name no server path.
* Load: every request goes through Gradio's queue with a small concurrency limit (CPU-heavy callbacks do
  not pile up); long callbacks show progress (TFUP's ``gr.Progress``, ProAPO's streaming).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["TABS", "build_app", "launch", "IMAGE_FILE_TYPES", "DEFAULT_MAX_FILE_SIZE"]

# tab key -> (tab title, module under demos/)
TABS: dict[str, tuple[str, str]] = {
    "tfup": ("TFUP", "demos.tfup"),
    "proapo": ("ProAPO", "demos.proapo"),
    "repri": ("RePRI", "demos.repri"),
    "minionerec": ("MiniOneRec", "demos.minionerec"),
    "ares": ("ARES", "demos.ares"),
}
IMAGE_FILE_TYPES = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"]
DEFAULT_MAX_FILE_SIZE = "10mb"


def _restrict_uploads(app) -> None:
    """Every component that takes a file must take images: set ``file_types`` where the component has it,
    and fail loudly (at build time) on an upload component of another kind, so a new demo cannot widen
    what the app accepts without someone deciding it."""
    import gradio as gr

    for block in app.blocks.values():
        if isinstance(block, (gr.File, gr.UploadButton, gr.Gallery, gr.MultimodalTextbox)):
            if isinstance(block, gr.Gallery) and not block.interactive:
                continue
            block.file_types = list(IMAGE_FILE_TYPES)
        elif isinstance(block, (gr.Audio, gr.Video, gr.Model3D)) and block.interactive is not False:
            raise TypeError(f"app: upload component {type(block).__name__} ({block.label!r}) is not an image component")


def build_app(
    tabs: Sequence[str] | None = None,
    tfup_backbone: str = "offline-lite0-minilm",
    tfup_subset_size: int = 1000,
    cache_dir: str | None = None,
    minionerec_checkpoint: str | None = None,
    minionerec_dataset: str | None = None,
    minionerec_untrained: bool = False,
    assets_dir: str | None = None,
    concurrency_limit: int = 2,
    max_queue_size: int = 64,
    checkpoint_dir: str | None = None,
):
    """The whole app (not launched): a ``gr.Blocks`` with one ``gr.Tab`` per method.

    Args:
        tabs: the tab keys to include (default: all of ``TABS``, in that order).
        tfup_backbone / tfup_subset_size / cache_dir: passed to ``demos.tfup.build_demo`` (its model is
            built on the first click, not here); ``cache_dir`` None: the kit's cache root (``$VLKIT_CACHE``).
        minionerec_checkpoint / minionerec_dataset / minionerec_untrained: passed to
            ``demos.minionerec.build_demo``; by default the trained recommender on Amazon Industrial that
            ``make demo-assets`` built (the tab offers to build it when missing); ``minionerec_untrained``: an
            untrained tiny model on synthetic data instead, labelled "untrained".
        assets_dir: where the demos' trained models live (None: ``<cache>/demo-assets``, ``demos/assets.py``).
        concurrency_limit: events of one kind that run at once; the rest wait in the queue.
        max_queue_size: requests waiting beyond this are refused with "queue full".
        checkpoint_dir: the folder whose ``*.ckpt`` files visitors may pick (ARES tab) and in which
            ``minionerec_checkpoint`` is looked up by name; None: no visitor can load a checkpoint.
    """
    import importlib

    import gradio as gr

    from demos._safety import guard_handlers, guard_image_inputs

    keys = list(TABS) if tabs is None else list(tabs)
    unknown = [k for k in keys if k not in TABS]
    if unknown or not keys:
        raise ValueError(f"tabs must be a non-empty subset of {list(TABS)}, got {list(tabs) if tabs is not None else None}")
    if concurrency_limit < 1:
        raise ValueError(f"concurrency_limit must be >= 1, got {concurrency_limit}")
    if max_queue_size < 1:
        raise ValueError(f"max_queue_size must be >= 1, got {max_queue_size}")
    arguments = {
        "tfup": dict(backbone=tfup_backbone, subset_size=tfup_subset_size, cache_dir=cache_dir),
        "minionerec": dict(checkpoint=minionerec_checkpoint, dataset=minionerec_dataset, checkpoint_dir=checkpoint_dir,
                           untrained=minionerec_untrained, assets_dir=assets_dir),
        "ares": dict(checkpoint_dir=checkpoint_dir),
    }
    # Build every demo *outside* the app's context: a gr.Blocks created inside another one renders itself
    # there at once, and the .render() below would then show it twice (seen in the browser tests).
    demos = {key: importlib.import_module(TABS[key][1]).build_demo(**arguments.get(key, {})) for key in keys}
    with gr.Blocks(title="vlkit demos") as app:
        gr.Markdown(
            "# vlkit\nOne tab per method: TFUP (training-free unsupervised prompts), ProAPO (prompt search), "
            "RePRI (few-shot segmentation), MiniOneRec (generative recommendation), ARES (entropy-shaped "
            "reasoning rewards). Each tab is the method's own demo (`demos/<method>.py`) and says which model, "
            "weights and data it runs on."
        )
        for key in keys:
            with gr.Tab(TABS[key][0], id=key):
                demos[key].render()
    _restrict_uploads(app)
    guard_image_inputs(app)  # each demo guards its own; this catches a demo that forgot
    guard_handlers(app)  # failures reach visitors as path-free gr.Error messages, never tracebacks
    app.queue(default_concurrency_limit=concurrency_limit, max_size=max_queue_size)
    return app


def launch(
    host: str = "127.0.0.1",
    port: int = 7860,
    max_file_size: str | int = DEFAULT_MAX_FILE_SIZE,
    prevent_thread_lock: bool = False,
    auth: str | None = None,
    no_auth: bool = False,
    **app_options,
):
    """Build the app and serve it on ``host:port`` (127.0.0.1 by default: local only).

    A non-loopback ``host`` needs ``auth`` (``"user:password"``, Gradio's login) or ``no_auth=True``;
    otherwise a :class:`vlkit.errors.ConfigError` is raised before anything is built or bound.
    ``app_options`` go to :func:`build_app` (``checkpoint_dir`` among them). With ``prevent_thread_lock``
    it returns the running app (tests; call ``app.close()``), otherwise it blocks until interrupted."""
    from demos._safety import check_launch

    credentials = check_launch(host, auth, no_auth)  # host type, loopback or login
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in [0, 65535], got {port!r}")
    app = build_app(**app_options)
    app.launch(
        server_name=host,
        server_port=port,
        auth=credentials,
        max_file_size=max_file_size,
        prevent_thread_lock=prevent_thread_lock,
        show_error=False,  # handlers raise gr.Error with public messages (guard_handlers)
        quiet=prevent_thread_lock,
    )
    return app


if __name__ == "__main__":
    from demos.__main__ import main

    main()
