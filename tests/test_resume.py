"""Resume after a crash: SIGKILL a `vlkit fit` run after its first checkpoint, resume it with
`--ckpt_path last`, and end with the same parameters as a run that was never interrupted; and the caches
(image features, semantic IDs, item text embeddings) survive a kill mid-write: whole or absent, never torn."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "vlkit" / "tfup" / "tiny_tfupt.yaml"
MAX_EPOCHS = 6
SEED = 7

# A helper callback importable by the subprocess (tmp dir on PYTHONPATH). PauseEachEpoch only sleeps, so
# the kill lands mid-run on a loaded machine; it touches no RNG and no parameter. No RNG state is saved or
# restored: FewShotDataModule's training order and augmented views are a function of (data seed, epoch)
# alone, so an exact resume needs nothing beyond Lightning's own checkpoint.
HELPERS = textwrap.dedent(
    """
    import time
    from lightning.pytorch.callbacks import Callback

    class PauseEachEpoch(Callback):
        def __init__(self, seconds: float = 0.4) -> None:
            self.seconds = seconds

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            time.sleep(self.seconds)
    """
)


def _write_config(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """The tiny TFUP-T config with a fixed seed, a checkpoint every epoch (+ last.ckpt) and its own root."""
    cfg = yaml.safe_load(CONFIG.read_text())
    root = tmp_path / name
    cfg["seed_everything"] = SEED
    cfg["data"]["init_args"]["cache_dir"] = str(tmp_path / "cache")  # shared by the runs: encoded once
    cfg["trainer"].update(max_epochs=MAX_EPOCHS, default_root_dir=str(root), enable_progress_bar=False,
                          accelerator="cpu")
    cfg["trainer"]["callbacks"] = [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(root / "checkpoints"), "save_last": True, "save_top_k": -1, "every_n_epochs": 1}},
        {"class_path": "resume_helpers.PauseEachEpoch", "init_args": {"seconds": 0.4}},
    ]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, root


def _env(tmp_path: Path) -> dict:
    (tmp_path / "resume_helpers.py").write_text(HELPERS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # same threads -> same float sums
    return env


def _fit(config: Path, env: dict, extra: list[str] = ()) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vlkit.cli", "fit", "--config", str(config), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _trained_parameters(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith(("adapter.", "text_residual"))}


def _warm_feature_cache(config: Path) -> None:
    """Encode the config's features once, before the runs, so the timed runs only train (connect() no
    longer touches the global RNG, so a cold cache would give the same parameters, only slower)."""
    from vlkit.data.fewshot import FewShotDataModule
    from vlkit.models.backbones import create_backbone

    cfg = yaml.safe_load(config.read_text())
    FewShotDataModule(**cfg["data"]["init_args"]).connect(create_backbone(cfg["model"]["init_args"]["backbone"]))


def test_sigkill_then_resume_from_last_matches_an_uninterrupted_run(tmp_path):
    env = _env(tmp_path)
    clean_cfg, clean_root = _write_config(tmp_path, "clean")
    crash_cfg, crash_root = _write_config(tmp_path, "crash")
    _warm_feature_cache(clean_cfg)
    clean = _fit(clean_cfg, env)
    crash = _fit(crash_cfg, env)
    # kill the second run (SIGKILL: no handler, no cleanup) as soon as its first checkpoint is on disk
    # (last.ckpt: ModelCheckpoint writes it right after the epoch's own file)
    ckpt_dir, deadline = crash_root / "checkpoints", time.time() + 300
    while not (ckpt_dir / "last.ckpt").exists():
        assert crash.poll() is None, f"the run ended before its first checkpoint:\n{crash.stdout.read()}"
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.02)
    crash.send_signal(signal.SIGKILL)
    crash.wait(timeout=60)
    assert crash.returncode == -signal.SIGKILL
    epochs_done = sorted(p.name for p in ckpt_dir.iterdir() if p.name.startswith("epoch="))
    assert 1 <= len(epochs_done) < MAX_EPOCHS, epochs_done  # killed mid-run, not after the end
    killed_at = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)["epoch"]
    assert killed_at < MAX_EPOCHS - 1

    resumed = _fit(crash_cfg, env, ["--ckpt_path", "last"])
    out_resumed, _ = resumed.communicate(timeout=600)
    out_clean, _ = clean.communicate(timeout=600)
    assert clean.returncode == 0, out_clean[-3000:]
    assert resumed.returncode == 0, out_resumed[-3000:]
    assert "Restoring states from the checkpoint path" in out_resumed or "Restored all states" in out_resumed, out_resumed[-2000:]

    final_clean = torch.load(clean_root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    final_resumed = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)
    assert final_clean["epoch"] == final_resumed["epoch"] == MAX_EPOCHS - 1
    assert final_clean["global_step"] == final_resumed["global_step"]
    clean_params, resumed_params = _trained_parameters(clean_root / "checkpoints" / "last.ckpt"), _trained_parameters(ckpt_dir / "last.ckpt")
    assert set(clean_params) == set(resumed_params) and "text_residual" in clean_params
    # training moved the parameters (the text residual starts at exactly 0) ...
    assert clean_params["text_residual"].abs().max() > 1e-4
    # ... and the resumed run lands on the same ones as the uninterrupted run
    for name in clean_params:
        diff = (clean_params[name] - resumed_params[name]).abs().max().item()
        assert diff <= 1e-6, f"{name}: resumed run differs from the uninterrupted run by {diff:.3g}"


WRITER = textwrap.dedent(
    """
    import json, sys, torch
    kind, folder, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    from vlkit.cache import atomic_torch_save, atomic_write_text
    from recsys.models.text_encoder import cached_item_embeddings
    blob = {"key": "k", "features": torch.arange(n * 64, dtype=torch.float32).reshape(n, 64), "labels": torch.zeros(n, dtype=torch.long)}
    text = json.dumps({str(j): ["<a_1>", "<b_2>", f"<c_{j % 256}>"] for j in range(n)})
    i = 0
    while True:  # write over and over (the data is built once), so that a kill lands mid-write
        if kind == "features":
            atomic_torch_save(blob, folder + "/features.pt")
        elif kind == "semantic_ids":
            atomic_write_text(folder + "/sid_index.json", text)
        else:  # item embeddings: a new text list each time -> a new cache file each time
            cached_item_embeddings([f"item {j} version {i}" for j in range(n)], "hash-64", cache_dir=folder)
        i += 1
        print("ok", flush=True)
    """
)
SIZES = {"features": 160_000, "semantic_ids": 300_000, "item_embeddings": 40_000}  # ~41 MB, ~10 MB, ~10 MB


def _check_valid(kind: str, path: Path, n: int) -> None:
    if kind == "features":
        blob = torch.load(path, map_location="cpu", weights_only=True)
        assert blob["features"].shape == (n, 64)
        assert torch.equal(blob["features"][-1], torch.arange((n - 1) * 64, n * 64, dtype=torch.float32))
    elif kind == "semantic_ids":
        index = json.loads(path.read_text())
        assert len(index) == n and index[str(n - 1)][-1] == f"<c_{(n - 1) % 256}>"
    else:
        emb = torch.load(path, map_location="cpu", weights_only=True)
        assert emb.shape == (n, 64) and torch.isfinite(emb).all()


def test_caches_survive_sigkill_mid_write(tmp_path):
    """Kill processes that keep rewriting each kind of cache (image features, semantic IDs, item text
    embeddings), 0, 10 or 30 ms after a complete write: every file under a cache's real name is whole; what a
    kill leaves behind is only a writer's temporary ``*.tmp`` file, which no reader opens."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    leftovers = 0
    for kind, n in SIZES.items():
        for delay in (0.0, 0.01, 0.03):
            folder = tmp_path / f"{kind}-{delay}"
            folder.mkdir()
            proc = subprocess.Popen([sys.executable, str(script), kind, str(folder), str(n)], cwd=ROOT,
                                    stdout=subprocess.PIPE, text=True)
            assert proc.stdout.readline().strip() == "ok", f"{kind}: the writer failed"  # one complete write
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            files = sorted(folder.iterdir())
            real = [p for p in files if not p.name.endswith(".tmp")]
            leftovers += len(files) - len(real)
            assert real, f"{kind}: the completed write is gone"
            for path in real:
                _check_valid(kind, path, n)
    # the kills did land mid-write (a temporary file was caught half-written), so the check above was real
    assert leftovers >= 1


def test_feature_cache_rebuilds_after_a_torn_file(tmp_path):
    """encode_dataset treats a truncated cache (what a non-atomic writer would leave) as corrupt and
    re-encodes; the rebuilt file equals the original."""
    from vlkit.data.features import encode_dataset, feature_cache_path
    from vlkit.data.fewshot import build_dataset
    from vlkit.models.backbones import create_backbone
    from torch.utils.data import Subset

    backbone = create_backbone("tiny-random")
    data = Subset(build_dataset("fashion-mnist", "test"), list(range(16)))
    feats, labels = encode_dataset(backbone, data, cache_dir=tmp_path, progress=False, device="cpu")
    path, _ = feature_cache_path(backbone, data, tmp_path)
    full = path.read_bytes()
    path.write_bytes(full[: len(full) // 2])  # torn write
    again, labels_again = encode_dataset(backbone, data, cache_dir=tmp_path, progress=False, device="cpu")
    assert torch.allclose(again, feats, atol=1e-6) and torch.equal(labels_again, labels)
    assert len(path.read_bytes()) == len(full)  # rebuilt and rewritten whole
