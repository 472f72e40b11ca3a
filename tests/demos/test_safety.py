"""What a visitor can make the demo server do: checkpoints only by name from the operator's folder and only
with weights_only=True, uploads decoded and verified before use with path-free errors, and no
non-loopback launch without a login decision."""

from __future__ import annotations

import http.server
import os
import struct
import threading
import zlib
from pathlib import Path

import pytest
import torch

from vlkit.errors import ConfigError


# ----------------------------------------------------------------------------------------------- helpers
def _save_lightning_checkpoint(module, path: Path) -> Path:
    """A checkpoint written by Lightning itself (Trainer.save_checkpoint: state_dict, hyper_parameters,
    loops, the module's on_save_checkpoint), without a training run."""
    import lightning as L

    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def ares_checkpoint(tmp_path_factory) -> Path:
    """checkpoints/ares.ckpt: a tiny LitARES whose running HWE threshold is 0.123 (a fresh model has -1)."""
    from vlkit.methods.ares import LitARES

    folder = tmp_path_factory.mktemp("checkpoints")
    module = LitARES(language_model=dict(model_name="tiny-random-lm", lora_r=0), kl_coef=0.0, group_size=2)
    module.hwe_threshold.fill_(0.123)
    return _save_lightning_checkpoint(module, folder / "ares.ckpt")


class _RecordingHandler(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).requests.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"not a checkpoint")

    def log_message(self, *args):
        pass


@pytest.fixture
def recording_server():
    """A local HTTP server on 127.0.0.1 that records every request it gets."""
    _RecordingHandler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _RecordingHandler.requests
    finally:
        server.shutdown()
        server.server_close()


def _png_header_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR chunk (with a recomputed CRC) claims ``width`` x ``height`` pixels."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    # PNG layout: 8-byte signature, then IHDR = length(4) "IHDR"(4) width(4) height(4) ... crc(4)
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # CRC over "IHDR" + its 13 data bytes
    return bytes(data)


# ----------------------------------------------------------------------------------------- checkpoint names
def test_a_typed_url_is_refused_and_nothing_is_fetched(tmp_path, recording_server):
    from demos.ares import analyze
    from demos._safety import resolve_checkpoint

    base, requests = recording_server
    for url in (f"{base}/model.ckpt", f"file://{tmp_path}/x.ckpt", "s3:bucket/x.ckpt"):
        with pytest.raises(ConfigError, match="not a URL"):
            resolve_checkpoint(url, tmp_path)
    # through the ARES handler, with and without a checkpoint folder configured
    with pytest.raises(ConfigError, match="not a URL"):
        analyze("What is 2 + 2?", "4", "tiny-random-lm", f"{base}/model.ckpt", "easy", 0, 0.5, 1.0, 4, 0,
                checkpoint_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="without --checkpoint-dir"):
        analyze("What is 2 + 2?", "4", "tiny-random-lm", f"{base}/model.ckpt", "easy", 0, 0.5, 1.0, 4, 0)
    assert requests == []  # the stub got no request: no URL is ever handed to a loader
    # the stub does answer, so an empty list is not a dead server
    import urllib.request

    with urllib.request.urlopen(f"{base}/probe") as answer:
        assert answer.read() == b"not a checkpoint"
    assert requests == ["/probe"]


def test_paths_outside_the_folder_are_refused(tmp_path, ares_checkpoint):
    from demos._safety import checkpoint_choices, resolve_checkpoint

    folder = tmp_path / "ckpts"
    folder.mkdir()
    outside = tmp_path / "outside.ckpt"
    outside.write_bytes(ares_checkpoint.read_bytes())  # a real checkpoint, just not in the folder
    with pytest.raises(ConfigError, match="not an absolute path"):
        resolve_checkpoint(str(outside), folder)
    with pytest.raises(ConfigError, match="'..'"):
        resolve_checkpoint("../outside.ckpt", folder)
    with pytest.raises(ConfigError, match="not a path"):
        resolve_checkpoint("sub/model.ckpt", folder)
    with pytest.raises(ConfigError, match="not a path"):
        resolve_checkpoint("sub\\model.ckpt", folder)
    with pytest.raises(ConfigError, match="ending in .ckpt"):
        resolve_checkpoint("notes.txt", folder)
    # a symlink in the folder that leads out of it is refused and not offered
    (folder / "escape.ckpt").symlink_to(outside)
    with pytest.raises(ConfigError, match="leads outside the checkpoint directory"):
        resolve_checkpoint("escape.ckpt", folder)
    # one that stays inside is fine, as is a plain file
    (folder / "real.ckpt").write_bytes(b"x")
    (folder / "alias.ckpt").symlink_to(folder / "real.ckpt")
    assert resolve_checkpoint("alias.ckpt", folder) == (folder / "real.ckpt").resolve()
    assert checkpoint_choices(folder) == ["alias.ckpt", "real.ckpt"]
    with pytest.raises(ConfigError, match="no such file; available: alias.ckpt, escape.ckpt, real.ckpt"):
        resolve_checkpoint("missing.ckpt", folder)
    # no folder configured: every name is refused
    with pytest.raises(ConfigError, match="disabled"):
        resolve_checkpoint("real.ckpt", None)
    # no message carries the server's folder
    for name in (str(outside), "../outside.ckpt", "escape.ckpt", "missing.ckpt"):
        with pytest.raises(ConfigError) as caught:
            resolve_checkpoint(name, folder)
        assert str(folder) not in str(caught.value)


# ------------------------------------------------------------------------------------------ checkpoint loads
def test_a_checkpoint_named_in_the_folder_loads_in_the_ares_tab(ares_checkpoint):
    import gradio as gr

    from demos.ares import analyze, build_demo

    folder = str(ares_checkpoint.parent)
    demo = build_demo(checkpoint_dir=folder)
    box = next(b for b in demo.blocks.values() if getattr(b, "label", None) == "LitARES checkpoint")
    assert isinstance(box, gr.Dropdown) and box.interactive
    assert [value for _, value in box.choices] == ["", "ares.ckpt"]
    _, summary = analyze("What is 2 + 2?", "4", "tiny-random-lm", "ares.ckpt", "easy", 0, 0.5, 1.0, 4, 0,
                         checkpoint_dir=folder)
    # the threshold written into the checkpoint is the one used (a fresh model has none: -1)
    assert "threshold 0.12 nats, the checkpoint's running threshold" in summary
    # without a folder the box is disabled
    closed = build_demo()
    box = next(b for b in closed.blocks.values() if getattr(b, "label", None) == "LitARES checkpoint")
    assert box.interactive is False and [value for _, value in box.choices] == [""]


def test_a_checkpoint_of_another_class_gives_one_clear_error(tmp_path):
    from recsys.methods.sasrec import LitSASRec

    from demos.ares import analyze
    from vlkit.checkpoints import load_checkpoint
    from vlkit.methods.ares import LitARES

    _save_lightning_checkpoint(LitSASRec(hidden_size=8, num_heads=2, num_layers=1), tmp_path / "sasrec.ckpt")
    assert load_checkpoint(tmp_path / "sasrec.ckpt")["vlkit_class"] == "recsys.methods.sasrec.LitSASRec"
    with pytest.raises(ConfigError) as caught:
        analyze("What is 2 + 2?", "4", "tiny-random-lm", "sasrec.ckpt", "easy", 0, 0.5, 1.0, 4, 0,
                checkpoint_dir=str(tmp_path))
    assert str(caught.value) == "checkpoint 'sasrec.ckpt' is a LitSASRec checkpoint; expected a LitARES checkpoint"
    # a checkpoint written before classes were recorded: judged by its hyperparameters' names
    old = torch.load(tmp_path / "sasrec.ckpt", map_location="cpu", weights_only=True)
    del old["vlkit_class"]
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.raises(ConfigError, match=r"not a LitARES checkpoint: its hyperparameters \['dropout'"):
        load_checkpoint(tmp_path / "old.ckpt", LitARES)
    assert load_checkpoint(tmp_path / "old.ckpt", LitSASRec)["hyper_parameters"]["hidden_size"] == 8


def test_every_lit_module_records_its_class_when_saved():
    import importlib
    import inspect

    import lightning as L

    modules = ["vlkit.methods.ares", "vlkit.methods.ares_coldstart", "vlkit.methods.repri", "vlkit.methods.tfup",
               "prompts_evo.methods.proapo", "recsys.methods.minionerec", "recsys.methods.rqvae", "recsys.methods.sasrec"]
    found = []
    for name in modules:
        module = importlib.import_module(name)
        for cls in vars(module).values():
            if isinstance(cls, type) and issubclass(cls, L.LightningModule) and cls.__module__ == name \
                    and not cls.__name__.startswith("_"):  # private bases are never saved themselves
                hook = cls.on_save_checkpoint
                assert hook is not L.LightningModule.on_save_checkpoint, f"{cls.__name__} has no on_save_checkpoint"
                assert "record_class(checkpoint, self)" in inspect.getsource(hook), cls.__name__
                found.append(cls.__name__)
    assert {"LitARES", "LitColdStartSFT", "LitRePRI", "LitRePRIBaseTraining", "LitTFUP", "LitTFUPT", "LitProAPO",
            "LitMiniOneRec", "LitMiniOneRecRL", "LitRQVAE", "LitSASRec"} <= set(found)


class _Payload:
    """Unpickling this runs ``os.mkdir(target)``: what a malicious checkpoint would do with worse code."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return os.mkdir, (self.target,)


def test_a_checkpoint_that_needs_unpickling_code_is_refused(tmp_path):
    from vlkit.checkpoints import load_checkpoint

    marker = tmp_path / "code-ran"
    torch.save({"state_dict": {}, "extra": _Payload(str(marker))}, tmp_path / "evil.ckpt")
    with pytest.raises(ConfigError, match=r"'evil.ckpt' holds objects other than tensors.*weights_only=True.*mkdir"):
        load_checkpoint(tmp_path / "evil.ckpt", name="evil.ckpt")
    assert not marker.exists()  # refused before anything ran
    # the payload is live: an unsafe load would have run it (the test's deliberate unsafe load, on its own file)
    torch.load(tmp_path / "evil.ckpt", weights_only=False)
    assert marker.is_dir()
    # other broken files: one ConfigError each
    (tmp_path / "text.ckpt").write_text("hello")
    torch.save(torch.zeros(2), tmp_path / "tensor.ckpt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "nostate.ckpt")
    with pytest.raises(ConfigError, match="'text.ckpt' is not a readable torch checkpoint"):
        load_checkpoint(tmp_path / "text.ckpt", name="text.ckpt")
    with pytest.raises(ConfigError, match="must hold a checkpoint dict, got a Tensor"):
        load_checkpoint(tmp_path / "tensor.ckpt")
    with pytest.raises(ConfigError, match=r"with a 'state_dict', got a dict with keys \['weights'\]"):
        load_checkpoint(tmp_path / "nostate.ckpt")
    with pytest.raises(ConfigError, match="no such file"):
        load_checkpoint(tmp_path / "absent.ckpt")


def test_minionerec_loads_its_launch_checkpoint_by_name_with_weights_only(tmp_path):
    from recsys.data.sequences import load_seqrec
    from recsys.methods.minionerec import LitMiniOneRec

    from demos.minionerec import load_recommender

    data = load_seqrec("synthetic")
    module = LitMiniOneRec(sid_path="random-8x2", decoder=dict(hidden_size=32, num_layers=1, num_heads=2))
    module.build(data)
    name, weight = next((k, v) for k, v in module.state_dict().items() if v.is_floating_point())
    with torch.no_grad():
        weight.add_(1.0)  # trained-looking weights that a fresh build cannot reproduce
    _save_lightning_checkpoint(module, tmp_path / "sft.ckpt")
    loaded, _ = load_recommender("sft.ckpt", checkpoint_dir=str(tmp_path))
    assert torch.equal(loaded.state_dict()[name], weight)
    fresh, _ = load_recommender()
    assert not torch.equal(fresh.state_dict()[name], weight)
    with pytest.raises(ConfigError, match="not an absolute path"):
        load_recommender(str(tmp_path / "sft.ckpt"), checkpoint_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------------------- images
def test_a_text_file_named_png_is_refused_without_a_path(tmp_path):
    from demos._safety import NOT_AN_IMAGE, open_image

    fake = tmp_path / "photo.png"
    fake.write_text("this is not an image")
    with pytest.raises(ConfigError) as caught:
        open_image(fake)
    assert NOT_AN_IMAGE in str(caught.value) and str(tmp_path) not in str(caught.value)
    # a truncated PNG (a real header, no pixel data) fails too
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "ok.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    with pytest.raises(ConfigError, match="not a readable image"):
        open_image(tmp_path / "cut.png")
    assert open_image(tmp_path / "ok.png").getpixel((3, 3)) == (200, 10, 10)


def test_uploads_in_the_demo_components_are_verified_before_gradio_decodes_them(tmp_path):
    import gradio as gr
    from gradio.data_classes import FileData, ImageData
    from PIL import Image

    from demos._safety import NOT_AN_IMAGE
    from demos.repri import build_demo as build_repri
    from demos.tfup import build_demo as build_tfup

    fake = tmp_path / "photo.png"
    fake.write_text("this is not an image")
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "ok.png")
    tfup = build_tfup(backbone="tiny-random", subset_size=20, cache_dir=str(tmp_path / "cache"))
    upload = next(b for b in tfup.blocks.values() if getattr(b, "label", None) == "image (optional upload)")
    with pytest.raises(gr.Error) as caught:
        upload.preprocess(ImageData(path=str(fake), orig_name="photo.png"))
    assert caught.value.message == NOT_AN_IMAGE  # no temp path, no Pillow text
    assert upload.preprocess(ImageData(path=str(tmp_path / "ok.png"), orig_name="ok.png")).getpixel((1, 1)) == (0, 0, 255)
    # RePRI: the query image and the support editor (files and the browser's blobs)
    repri = build_repri()
    query = next(b for b in repri.blocks.values() if getattr(b, "label", None) == "Query image")
    editor = next(b for b in repri.blocks.values() if isinstance(b, gr.ImageEditor))
    with pytest.raises(gr.Error, match="not a readable image"):
        query.preprocess(ImageData(path=str(fake), orig_name="q.png"))
    with pytest.raises(gr.Error, match="not a readable image"):
        editor.convert_and_format_image(FileData(path=str(fake), orig_name="s.png"))
    with pytest.raises(gr.Error, match="not a readable image"):
        editor.convert_and_format_image(b"GIF89a but not really")
    assert editor.convert_and_format_image(FileData(path=str(tmp_path / "ok.png"))).shape[:2] == (8, 8)


def test_a_too_large_image_is_refused_before_decoding(tmp_path):
    import gradio as gr
    from gradio.data_classes import ImageData

    from demos._safety import MAX_IMAGE_PIXELS, guard_image_inputs, open_image

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_claiming(10_000, 10_000))  # 100 MP claimed by a 70-byte file
    with pytest.raises(ConfigError, match=f"too large \\(10000x10000 = 100000000 pixels; at most {MAX_IMAGE_PIXELS}"):
        open_image(bomb)
    with pytest.raises(ConfigError, match="too large"):
        open_image(_png_header_claiming(5, 5), max_pixels=24)  # 25 > 24, bytes in
    with gr.Blocks() as demo:
        image = gr.Image(type="pil")
    guard_image_inputs(demo)
    with pytest.raises(gr.Error, match="too large") as caught:
        image.preprocess(ImageData(path=str(bomb), orig_name="bomb.png"))
    assert str(tmp_path) not in caught.value.message


# --------------------------------------------------------------------------------------------------- network
def test_a_non_loopback_launch_needs_auth_or_no_auth(monkeypatch):
    import demos.app
    from demos._safety import check_launch, is_loopback

    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host) and check_launch(host) is None
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.com"):
        assert not is_loopback(host)
        with pytest.raises(ConfigError, match="not a loopback address.*--auth USER:PASSWORD.*--no-auth"):
            check_launch(host)
    assert check_launch("0.0.0.0", no_auth=True) is None
    assert check_launch("0.0.0.0", auth="ana:s3:cret") == ("ana", "s3:cret")
    with pytest.raises(ConfigError, match="USER:PASSWORD"):
        check_launch("0.0.0.0", auth=":x")
    with pytest.raises(ConfigError, match="exclude each other"):
        check_launch("0.0.0.0", auth="a:b", no_auth=True)

    # launch(): refused before the app is built or bound; the login reaches Gradio's launch
    calls = []

    class FakeApp:
        def launch(self, **kwargs):
            calls.append(kwargs)

    monkeypatch.setattr(demos.app, "build_app", lambda **options: calls.append(options) or FakeApp())
    with pytest.raises(ConfigError, match="not a loopback"):
        demos.app.launch(host="0.0.0.0", port=7860)
    assert calls == []
    demos.app.launch(host="0.0.0.0", port=7860, auth="ana:pw", checkpoint_dir="/ckpts")
    assert calls[0] == {"checkpoint_dir": "/ckpts"}
    assert calls[1]["server_name"] == "0.0.0.0" and calls[1]["auth"] == ("ana", "pw")


@pytest.mark.parametrize("entry", ["python -m demos", "vlkit demo"])
def test_the_command_lines_exit_2_on_a_refused_launch(entry, capsys, monkeypatch):
    import demos.app

    monkeypatch.setattr(demos.app, "launch", lambda **kwargs: pytest.fail("launched"))
    if entry == "vlkit demo":
        from vlkit.cli import main

        run = lambda args: main(["demo", *args])  # noqa: E731
    else:
        from demos.__main__ import main as run
    monkeypatch.delenv("VLKIT_DEMO_AUTH", raising=False)
    with pytest.raises(SystemExit) as exited:
        run(["--host", "0.0.0.0"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"{entry}: error: host '0.0.0.0' is not a loopback address" in err
    with pytest.raises(SystemExit) as exited:
        run(["--checkpoint-dir", "/no/such/folder"])
    assert exited.value.code == 2 and "checkpoint_dir must be an existing directory" in capsys.readouterr().err
    # allowed: the options reach launch()
    seen = {}
    monkeypatch.setattr(demos.app, "launch", lambda **kwargs: seen.update(kwargs))
    run(["--host", "0.0.0.0", "--no-auth"])
    assert seen["host"] == "0.0.0.0" and seen["no_auth"] is True and seen["auth"] is None
    monkeypatch.setenv("VLKIT_DEMO_AUTH", "ana:pw")
    run(["--host", "0.0.0.0"])  # the login may come from the environment (kept out of `ps`)
    assert seen["auth"] == "ana:pw" and seen["no_auth"] is False
