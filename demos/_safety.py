"""What a visitor of the demo app may make the server do, in one place.

* **Checkpoints.** A visitor picks a checkpoint by *file name* from a directory the operator names at
  launch (``--checkpoint-dir``); :func:`resolve_checkpoint` refuses URLs, absolute paths, ``..``, path
  separators and symlinks that lead out of the directory, and with no directory configured refuses every
  name. The file is then read by :func:`vlkit.checkpoints.load_checkpoint` (``weights_only=True``).
* **Uploads.** :func:`open_image` decodes an upload with Pillow (open, verify, reopen, load) under a pixel
  limit; :func:`guard_image_inputs` runs it on every image an ``Image``/``ImageEditor`` component receives,
  before Gradio's own decoding, so a text file named ``.png`` or a decompression bomb stops there with a
  message that names no server path.
* **Network.** :func:`check_launch` refuses to bind a non-loopback address without ``--auth USER:PASSWORD``
  or an explicit ``--no-auth``.

Every refusal is a :class:`vlkit.errors.ConfigError` (a ValueError) whose text names no server path, so
Gradio may show it to the visitor as it is.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import re
import warnings
from pathlib import Path
from typing import Any

from vlkit.errors import ConfigError

__all__ = [
    "MAX_IMAGE_PIXELS",
    "NOT_AN_IMAGE",
    "check_launch",
    "checkpoint_choices",
    "guard_handlers",
    "guard_image_inputs",
    "public_message",
    "is_loopback",
    "open_image",
    "parse_auth",
    "resolve_checkpoint",
]

MAX_IMAGE_PIXELS = 40_000_000  # 40 megapixels: far above any demo input, far below a decompression bomb
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")  # what Pillow may try; nothing else is decoded
NOT_AN_IMAGE = "the upload is not a readable image (PNG, JPEG, WebP, BMP or GIF)"
CHECKPOINT_SUFFIX = ".ckpt"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # http:, file:, s3:, C: (a Windows drive) ...


# ---------------------------------------------------------------------------------------------- checkpoints
def checkpoint_choices(checkpoint_dir: str | Path | None) -> list[str]:
    """The ``*.ckpt`` file names directly inside ``checkpoint_dir`` that :func:`resolve_checkpoint` accepts
    (sorted; symlinks leading out of the directory left out); ``[]`` without a directory."""
    if checkpoint_dir is None:
        return []
    root = Path(checkpoint_dir).resolve()
    names = []
    for entry in sorted(root.glob(f"*{CHECKPOINT_SUFFIX}")):
        try:
            resolve_checkpoint(entry.name, root)
        except ConfigError:
            continue
        names.append(entry.name)
    return names


def resolve_checkpoint(name: Any, checkpoint_dir: str | Path | None, argument: str = "checkpoint") -> Path:
    """The real path of the checkpoint file ``name`` inside ``checkpoint_dir``, or a :class:`ConfigError`.

    ``name`` must be a bare ``*.ckpt`` file name: no URL scheme (``http://``, ``file:``), no absolute path,
    no ``..``, no ``/`` or ``\\``. The joined path is resolved (symlinks followed) and must still lie inside
    the directory and be a regular file. With ``checkpoint_dir=None`` (the operator configured none) every
    name is refused. Messages name the file as typed, never the directory's path.
    """
    if checkpoint_dir is None:
        raise ConfigError(
            f"{argument}: loading checkpoints is disabled (the app was started without --checkpoint-dir), "
            f"got {name!r}",
            argument=argument,
        )
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{argument} must be a checkpoint file name, got {name!r}", argument=argument)
    shown = name if len(name) <= 80 else name[:77] + "..."
    expected = f"{argument} must be the name of a {CHECKPOINT_SUFFIX} file in the checkpoint directory"
    if "://" in name or _SCHEME.match(name):
        raise ConfigError(f"{expected}, not a URL, got {shown!r}", argument=argument)
    if name.startswith(("/", "\\", "~")):
        raise ConfigError(f"{expected}, not an absolute path, got {shown!r}", argument=argument)
    if ".." in re.split(r"[/\\]", name):
        raise ConfigError(f"{expected}, not a path with '..', got {shown!r}", argument=argument)
    if "/" in name or "\\" in name or "\x00" in name:
        raise ConfigError(f"{expected}, not a path (no '/' or '\\'), got {shown!r}", argument=argument)
    if not name.endswith(CHECKPOINT_SUFFIX) or name == CHECKPOINT_SUFFIX:
        raise ConfigError(f"{expected} (ending in {CHECKPOINT_SUFFIX}), got {shown!r}", argument=argument)
    root = Path(checkpoint_dir).resolve()
    if not root.is_dir():
        raise ConfigError(f"{argument}: the checkpoint directory does not exist, got {shown!r}", argument=argument)
    candidate = root / name
    if not candidate.exists():
        available = [p.name for p in sorted(root.glob(f"*{CHECKPOINT_SUFFIX}"))][:10]
        raise ConfigError(
            f"{expected}, got {shown!r} (no such file; available: {', '.join(available) or 'none'})", argument=argument
        )
    real = candidate.resolve()  # symlinks followed
    if not real.is_relative_to(root):
        raise ConfigError(f"{expected}, got {shown!r}, which leads outside the checkpoint directory", argument=argument)
    if not real.is_file():
        raise ConfigError(f"{expected}, got {shown!r}, which is not a regular file", argument=argument)
    return real


# -------------------------------------------------------------------------------------------------- images
def open_image(source: Any, *, max_pixels: int = MAX_IMAGE_PIXELS, argument: str = "image"):
    """Decode an upload as an image with Pillow, or raise a path-free :class:`ConfigError`.

    ``source`` is a file path, bytes, or a binary file object. Pillow may only try PNG, JPEG, WebP, BMP
    and GIF; the header's size must be at most ``max_pixels`` (a decompression-bomb limit, checked before
    any pixel is decoded); ``verify()`` checks the file's structure, then the file is opened again and
    fully decoded (``load()``), since a verified file can still fail to decode. Returns the loaded
    ``PIL.Image.Image``.
    """
    from PIL import Image

    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)

        def reopen():
            return io.BytesIO(data)

    elif isinstance(source, (str, Path)):

        def reopen():
            return source

    else:  # a binary file object: read it once
        data = source.read()

        def reopen():
            return io.BytesIO(data)

    def too_large(width: int, height: int) -> ConfigError:
        return ConfigError(
            f"{argument}: the upload is too large ({width}x{height} = {width * height} pixels; at most "
            f"{max_pixels} pixels)",
            argument=argument,
        )

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides below
            with Image.open(reopen(), formats=IMAGE_FORMATS) as probe:
                width, height = probe.size
                if width * height > max_pixels:
                    raise too_large(width, height)
                probe.verify()
            image = Image.open(reopen(), formats=IMAGE_FORMATS)
            if image.size != (width, height):  # the file changed between the two opens
                raise ConfigError(f"{argument}: {NOT_AN_IMAGE}", argument=argument)
            image.load()
    except ConfigError:
        raise
    except Image.DecompressionBombError:
        raise ConfigError(f"{argument}: the upload is too large (more than {max_pixels} pixels)", argument=argument) from None
    except Exception:  # Pillow raises OSError, SyntaxError, ValueError, EOFError, struct.error, ...
        raise ConfigError(f"{argument}: {NOT_AN_IMAGE}", argument=argument) from None
    return image


def _image_sources(payload: Any) -> list[Any]:
    """The files or bytes of every image in a Gradio image payload (ImageData, FileData, bytes, data URL)."""
    if payload is None:
        return []
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return [payload]
    url = getattr(payload, "url", None)
    path = getattr(payload, "path", None)
    if path:
        return [path]
    if isinstance(url, str) and url.startswith("data:"):
        try:
            return [base64.b64decode(url.split(",", 1)[1], validate=False)]
        except (IndexError, binascii.Error):
            return [b""]  # refused by open_image as not an image
    return []


def _guarded(original, max_pixels: int):
    """``original`` (a component's preprocess) preceded by :func:`open_image` on each image it receives."""
    import gradio as gr

    def preprocess(payload, *args, **kwargs):
        for source in _image_sources(payload):
            try:
                open_image(source, max_pixels=max_pixels)
            except ConfigError as error:
                raise gr.Error(str(error).split(": ", 1)[-1], print_exception=False) from None
        return original(payload, *args, **kwargs)

    preprocess.__wrapped__ = original
    return preprocess


def guard_image_inputs(blocks, max_pixels: int = MAX_IMAGE_PIXELS):
    """Make every ``gr.Image`` and ``gr.ImageEditor`` in ``blocks`` verify what it receives with
    :func:`open_image` before Gradio decodes it; a bad upload becomes a ``gr.Error`` with a path-free
    message. Idempotent; returns ``blocks``. Each demo calls it at the end of ``build_demo`` and the app
    calls it once more over all tabs."""
    import gradio as gr

    for block in blocks.blocks.values():
        if getattr(block, "_vlkit_image_guard", False):
            continue
        if isinstance(block, gr.ImageEditor):
            # background, layers and composite each pass through here, as a file or as browser blobs
            block.convert_and_format_image = _guarded(block.convert_and_format_image, max_pixels)
        elif isinstance(block, gr.Image):
            block.preprocess = _guarded(block.preprocess, max_pixels)
        else:
            continue
        block._vlkit_image_guard = True
    return blocks


# ------------------------------------------------------------------------------------------------ handlers
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][\w.@~+-]+){2,}[\\/]?")  # /tmp/gradio/ab12/x.png, C:\\Users\\...
INTERNAL_ERROR = "something went wrong on the server (the operator's log has the details)"


def public_message(error: BaseException) -> str:
    """What a visitor may read about ``error``: the text of a user error (``ValueError``, the kit's
    ``ConfigError`` among them) with every absolute path replaced by ``<path>``; for anything else only
    :data:`INTERNAL_ERROR` (its details may name server files or internals)."""
    if isinstance(error, ValueError):
        return _PATH.sub("<path>", str(error)) or INTERNAL_ERROR
    return INTERNAL_ERROR


def _guarded_handler(fn):
    """``fn`` with every exception turned into a ``gr.Error`` carrying :func:`public_message` (the full
    traceback is logged on the server). Generators (streaming handlers) and coroutines keep their kind."""
    import functools
    import inspect
    import logging

    import gradio as gr

    log = logging.getLogger("vlkit.demos")

    def translate(error: BaseException) -> BaseException:
        if isinstance(error, gr.Error):
            return error
        log.exception("demo handler %s failed", getattr(fn, "__name__", fn))
        return gr.Error(public_message(error), print_exception=False)

    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def wrapper(*args, **kwargs):
            try:
                async for item in fn(*args, **kwargs):
                    yield item
            except Exception as error:  # noqa: BLE001  (every failure reaches the visitor as a clean message)
                raise translate(error) from None
    elif inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def wrapper(*args, **kwargs):
            try:
                return await fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001
                raise translate(error) from None
    elif inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001
                raise translate(error) from None
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001
                raise translate(error) from None
    wrapper._vlkit_handler_guard = True
    return wrapper


def guard_handlers(blocks):
    """Wrap every event handler of ``blocks`` so that a failure shows the visitor a ``gr.Error`` with a
    path-free message (user errors: their text; anything else: a generic line) and never a traceback or
    a server path; the app then launches with ``show_error=False``. Idempotent; returns ``blocks``."""
    for block_fn in blocks.fns.values():
        fn = getattr(block_fn, "fn", None)
        if fn is not None and not getattr(fn, "_vlkit_handler_guard", False):
            block_fn.fn = _guarded_handler(fn)
    return blocks


# ------------------------------------------------------------------------------------------------- network
def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1 (an address only this machine can reach)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to anything


def parse_auth(text: Any) -> tuple[str, str]:
    """``"user:password"`` -> ``("user", "password")`` (split at the first colon; both non-empty)."""
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError("auth must be USER:PASSWORD, got a value without ':'", argument="auth")
    user, password = text.split(":", 1)
    if not user or not password:
        raise ConfigError("auth must be USER:PASSWORD with a non-empty user and password", argument="auth")
    return user, password


def check_launch(host: str, auth: str | None = None, no_auth: bool = False) -> tuple[str, str] | None:
    """The ``auth`` to pass to Gradio for serving on ``host``, or a :class:`ConfigError` before any launch.

    A loopback ``host`` needs nothing. Any other address (``0.0.0.0``, a LAN address, a host name) serves
    the app to others, so it needs ``auth`` (``"user:password"``) or a deliberate ``no_auth=True``.
    """
    if not isinstance(host, str) or not host:
        raise ConfigError(f"host must be a non-empty string, got {host!r}", argument="host")
    if auth is not None and no_auth:
        raise ConfigError("auth and no_auth exclude each other: give --auth USER:PASSWORD or --no-auth, not both",
                          argument="auth")
    credentials = parse_auth(auth) if auth is not None else None
    if credentials is None and not no_auth and not is_loopback(host):
        raise ConfigError(
            f"host {host!r} is not a loopback address, so anyone who reaches the port could use the app: "
            "give --auth USER:PASSWORD (or --no-auth to serve it without a login on purpose)",
            argument="host",
        )
    return credentials
