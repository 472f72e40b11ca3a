"""The kit's one on-disk cache: the cache root, atomic writes, and a keyed tensor cache.

Every cache in the three packages (encoded image features, the offline preset's projection, dense RePRI
features, episode lists, prompt embeddings, item embeddings, semantic IDs, converted model weights) goes
through this module, so there is one place that decides *where* things are cached and *how* a file is
written without ever leaving a half-written file under its real name.

Cache root: ``$VLKIT_CACHE`` if set, else ``~/.cache/vlkit`` (:func:`cache_root`). Subsystems use a
sub-folder each (``features/``, ``backbones/``, ``episodes/``, ``text-embeddings/``, ...).

Atomic write: write to a temporary file in the target's directory, ``fsync``, then ``os.replace`` onto the
target (atomic on POSIX and Windows); a crash leaves either the old file or the new one, never a mix.

Keyed cache: :class:`KeyedCache` maps a JSON-able key (backbone fingerprint, dataset, split, transform, ...)
to ``<root>/<namespace>/<sha1(key)>.pt``; loads with ``weights_only=True``, checks the stored key, and
treats a file that fails to load or fails the caller's check as a miss (it is rebuilt and overwritten).

Why here and not in ``vlkit/data``: ``vlkit/models`` (the offline preset) and ``vlkit/data`` (features)
both cache, and ``models`` must not import ``data``. Like ``vlkit/errors.py``, this module sits below every
layer and imports only the standard library and torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "cache_root",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_torch_save",
    "cache_key_digest",
    "KeyedCache",
]

CACHE_ENV = "VLKIT_CACHE"


def cache_root(subdir: str | None = None) -> Path:
    """The kit's cache directory: ``$VLKIT_CACHE`` or ``~/.cache/vlkit`` (created), or a sub-folder of it."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vlkit").expanduser()
    path = root / subdir if subdir else root
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file next to ``path``, then rename it onto ``path``.

    The temporary file lives in the same directory (so the rename never crosses file systems) and is
    removed if ``write`` raises. Returns ``path`` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:  # flush the data to disk before the rename makes it visible
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)

    return atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (UTF-8, keys sorted only if the caller sorted them) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (tensors, dicts, lists: loadable with ``weights_only=True``)."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def cache_key_digest(key: Any) -> str:
    """A stable hex digest (sha1) of a JSON-able key (dict keys sorted); strings are hashed as they are."""
    text = key if isinstance(key, str) else json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()


class KeyedCache:
    """A folder of ``torch.save`` files, one per key: ``<directory>/<sha1(key)>.pt``.

    Args:
        namespace: sub-folder of the cache root (``"features"``, ``"text-embeddings"``, ...).
        directory: an explicit directory instead of ``cache_root()/namespace`` (None: the cache root).

    ``get(key, check)`` returns the stored payload (a dict of tensors and plain values) or None when the
    file is missing, unreadable, written for another key, or rejected by ``check(payload) -> bool``;
    ``put(key, payload)`` writes atomically; ``get_or_build(key, build, check)`` does both.
    """

    def __init__(self, namespace: str, directory: str | os.PathLike | None = None) -> None:
        if not namespace or "/" in namespace or namespace.startswith("."):
            raise ValueError(f"namespace must be a plain folder name, got {namespace!r}")
        self.namespace = namespace
        self.directory = Path(directory) / namespace if directory is not None else cache_root() / namespace

    def path(self, key: Any) -> Path:
        """Where the payload for ``key`` lives."""
        return self.directory / f"{cache_key_digest(key)}.pt"

    def get(self, key: Any, check: Callable[[dict], bool] | None = None) -> dict | None:
        """The payload stored for ``key``, or None (missing, corrupt, another key, or ``check`` failed)."""
        import torch

        path = self.path(key)
        if not path.is_file():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # corrupt or truncated file: a miss, rebuilt by the caller
            return None
        if not isinstance(blob, dict) or blob.get("__key__") != cache_key_digest(key):
            return None
        payload = blob.get("payload")
        if not isinstance(payload, dict):
            return None
        if check is not None:
            try:
                if not check(payload):
                    return None
            except Exception:
                return None
        return payload

    def put(self, key: Any, payload: dict) -> Path:
        """Store ``payload`` (a dict) for ``key`` atomically; returns the file's path."""
        if not isinstance(payload, dict):
            raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
        return atomic_torch_save({"__key__": cache_key_digest(key), "payload": payload}, self.path(key))

    def get_or_build(self, key: Any, build: Callable[[], dict], check: Callable[[dict], bool] | None = None) -> dict:
        """``get(key, check)``, or ``build()`` then ``put`` when that misses."""
        payload = self.get(key, check)
        if payload is None:
            payload = build()
            self.put(key, payload)
        return payload
