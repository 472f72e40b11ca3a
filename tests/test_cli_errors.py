"""User errors through the real CLI entry (``vlkit.cli.main``): one line ``error: ...`` on stderr, exit 2,
no traceback; ``--debug`` / ``VLKIT_DEBUG=1`` show the traceback; checkpoints of another method or of no
kit method are refused before Lightning opens them."""

import os
import subprocess
import sys
from pathlib import Path

import lightning
import pytest
import torch

from vlkit.cli import VlkitArgumentParser, _user_error_line, find_config_error, main
from vlkit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TFUP = ROOT / "configs/vlkit/tfup/tiny_tfup.yaml"
MINIONEREC = ROOT / "configs/recsys/minionerec/synthetic_tiny.yaml"
SASREC = ROOT / "configs/recsys/sasrec/synthetic_tiny.yaml"
RQVAE = ROOT / "configs/recsys/rqvae/synthetic_tiny.yaml"
REPRI = ROOT / "configs/vlkit/repri/fashion_scenes_tiny.yaml"
PROAPO = ROOT / "configs/prompts_evo/proapo/fashion-mnist_tiny.yaml"
ARES = ROOT / "configs/vlkit/ares/arithmetic_tiny.yaml"


def _lightning_checkpoint(path: Path, class_path: str | None, hparams: dict, extra: dict | None = None) -> str:
    """What ``vlkit fit`` writes, reduced to the keys the checks read (the class recorded by
    ``vlkit.checkpoints.record_class`` when ``class_path`` is given)."""
    checkpoint = {"state_dict": {"w": torch.zeros(2)}, "pytorch-lightning_version": lightning.__version__, "hyper_parameters": hparams}
    if class_path:
        checkpoint["vlkit_class"] = class_path
    checkpoint.update(extra or {})
    torch.save(checkpoint, path)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Checkpoints and folders the bad inputs point at."""
    from PIL import Image

    root = tmp_path_factory.mktemp("cli_inputs")
    (root / "empty").mkdir()
    flat = root / "flat"
    for cls in ("cat", "dog"):
        (flat / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8)).save(flat / cls / f"{i}.png")
    (root / "notes.ckpt").write_text("not a checkpoint")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, root / "plain.pt")
    return {
        "empty": str(root / "empty"),
        "flat": str(flat),
        "text": str(root / "notes.ckpt"),
        "plain": str(root / "plain.pt"),
        "missing": str(root / "missing.ckpt"),
        "tfupt": _lightning_checkpoint(root / "tfupt.ckpt", "vlkit.methods.tfup.LitTFUPT", {"lr": 1e-3}),
        "tfup": _lightning_checkpoint(root / "tfup.ckpt", "vlkit.methods.tfup.LitTFUP", {"alpha": 1.0}),
        "sasrec": _lightning_checkpoint(root / "sasrec.ckpt", "recsys.methods.sasrec.LitSASRec", {"hidden_size": 8}),
        # written before checkpoints recorded their class: judged by its hyperparameters
        "old_foreign": _lightning_checkpoint(root / "old.ckpt", None, {"codebook_size": 8, "latent_dim": 4}),
        "object": _lightning_checkpoint(root / "object.ckpt", "vlkit.methods.tfup.LitTFUP", {}, {"extra": ConfigError("x")}),
        "root": str(root),
    }


# (id, config, arguments, the error line expected at its start); {name} is filled from `files`
CASES = [
    ("tfup-negative-alpha", TFUP, ["--model.init_args.cache.alpha=-1"], "error: model.init_args.cache.alpha must be >= 0, got -1.0"),
    ("tfup-unknown-mode", TFUP, ["--model.init_args.mode=tfupp"], "error: model.init_args.mode must be one of ['zeroshot', 'tfup', 'tip-adapter'], got 'tfupp' (closest: tfup"),
    ("tfup-cache-proportion", TFUP, ["--model.init_args.cache.cache_proportion=1.5"], "error: model.init_args.cache.cache_proportion must be >= 0 and <= 1, got 1.5"),
    ("tfup-unknown-preset", TFUP, ["--model.init_args.backbone=tiny-randm"],
     "error: model.init_args.backbone must be a preset, 'open_clip:<arch>/<tag>', '<arch>/<tag>', 'hf:<id>', "
     "an existing checkpoint file or a Hugging Face directory, got 'tiny-randm': unknown backbone (closest presets: tiny-random"),
    ("tfup-preset-with-slash", TFUP, ["--model.init_args.backbone=ViT-B-32/opnai"], "error: model.init_args.backbone: the pretrained tag of open_clip architecture 'ViT-B-32' must be one of its"),
    ("tfup-missing-backbone-file", TFUP, ["--model.init_args.backbone={missing}"], "error: model.init_args.backbone must be a preset"),
    ("tfup-empty-image-folder", TFUP, ["--data.init_args.dataset=imagefolder:{empty}?test_fraction=0.5"], "error: data.init_args.dataset image folder '{empty}' must hold <class>/<image> files with one of the extensions .jpg"),
    ("tfup-folder-without-splits", TFUP, ["--data.init_args.dataset=imagefolder:{flat}"], "error: data.init_args.dataset must be 'imagefolder:<dir>' with train/ and test/ class folders inside"),
    ("tfup-bad-test-fraction", TFUP, ["--data.init_args.dataset=imagefolder:{flat}?test_fraction=2"], "error: data.init_args.dataset test_fraction must be in (0, 1], got 2.0"),
    ("tfup-unknown-dataset", TFUP, ["--data.init_args.dataset=mnist"], "error: data.init_args.dataset must be 'fashion-mnist'"),
    ("tfup-negative-shots", TFUP, ["--data.init_args.shots=-1"], "error: data.init_args.shots must be >= 0, got -1"),
    ("tfup-shots-from-the-test-split", TFUP, ["--data.init_args.shots=2", "--data.init_args.labelled_split=test"], "error: data.init_args.labelled_split must differ from eval_split ('test') when shots > 0, got 'test'"),
    ("ckpt-missing", TFUP, ["--ckpt_path={missing}"], "error: ckpt_path must be an existing checkpoint file, got '{missing}' (no such file)"),
    ("ckpt-other-method", TFUP, ["--ckpt_path={tfupt}"], "error: ckpt_path '{tfupt}' is a LitTFUPT checkpoint; expected a LitTFUP checkpoint"),
    ("ckpt-old-other-method", TFUP, ["--ckpt_path={old_foreign}"], "error: ckpt_path '{old_foreign}' is not a LitTFUP checkpoint: its hyperparameters ['codebook_size', 'latent_dim']"),
    ("ckpt-plain-state-dict", TFUP, ["--ckpt_path={plain}"], "error: ckpt_path must be a Lightning checkpoint (written by `vlkit fit` or Trainer.save_checkpoint), got '{plain}'"),
    ("ckpt-not-torch", TFUP, ["--ckpt_path={text}"], "error: ckpt_path '{text}' is not a readable torch checkpoint"),
    ("ckpt-pickled-object", TFUP, ["--ckpt_path={object}"], "error: ckpt_path '{object}' holds objects other than tensors and plain values"),
    ("minionerec-negative-lr", MINIONEREC, ["--model.init_args.optimizer.lr=-0.1"], "error: model.init_args.optimizer.lr must be > 0, got -0.1"),
    ("minionerec-foreign-init-checkpoint", MINIONEREC, ["--model.init_args.init_checkpoint={sasrec}"], "error: model.init_args.init_checkpoint '{sasrec}' is a LitSASRec checkpoint; expected a LitMiniOneRec or LitMiniOneRecRL checkpoint"),
    ("minionerec-foreign-ckpt-path", MINIONEREC, ["--ckpt_path={tfup}"], "error: ckpt_path '{tfup}' is a LitTFUP checkpoint; expected a LitMiniOneRec checkpoint"),
    ("minionerec-released-ids-need-amazon18", MINIONEREC, ["--model.init_args.sid_path=released"], "error: model.init_args.sid_path='released' needs an amazon18-* data set"),
    ("recsys-unknown-dataset", MINIONEREC, ["--data.init_args.dataset=synthetc"], "error: data.init_args.dataset must be"),
    ("sasrec-zero-heads", SASREC, ["--model.init_args.num_heads=0"], "error: model.init_args.num_heads must be >= 1, got 0"),
    ("rqvae-one-code", RQVAE, ["--model.init_args.codebook_size=1"], "error: model.init_args.codebook_size must be >= 2, got 1"),
    ("repri-foreign-head", REPRI, ["--model.init_args.head_checkpoint={tfup}"], "error: model.init_args.head_checkpoint '{tfup}' is a LitTFUP checkpoint; expected a LitRePRIBaseTraining checkpoint"),
    ("proapo-template-library", PROAPO, ["--model.init_args.template_library=imagenet81"], "error: model.init_args.template_library must be one of"),
    ("ares-algorithm", ARES, ["--model.init_args.algorithm=ppo"], "error: model.init_args.algorithm must be one of"),
]


@pytest.mark.parametrize("config, arguments, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_user_error_is_one_line_and_exit_2(config, arguments, expected, files, capsys, tmp_path):
    argv = ["test", "--config", str(config), "--trainer.default_root_dir", str(tmp_path), *(a.format(**files) for a in arguments)]
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "Traceback" not in err and "Does not validate against any of the Union subtypes" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert errors[0].startswith(expected.format(**files)), errors[0]
    assert err.rstrip().endswith(errors[0])  # the error is the last thing printed


def test_debug_flag_and_environment_show_the_exception(monkeypatch, tmp_path):
    argv = ["test", "--config", str(TFUP), "--trainer.default_root_dir", str(tmp_path), "--model.init_args.cache.alpha=-1"]
    with pytest.raises(ConfigError, match="alpha must be >= 0") as info:
        main([*argv, "--debug"])
    assert info.traceback[-1].name == "check_number"  # the frames that raised it, down to the check
    # as a program (no args): --debug is taken out of sys.argv before LightningCLI reads it
    monkeypatch.setattr(sys, "argv", ["vlkit", "--debug", *argv])
    with pytest.raises(ConfigError, match="alpha must be >= 0"):
        main()
    assert "--debug" not in sys.argv
    monkeypatch.setattr(sys, "argv", ["vlkit", *argv])
    monkeypatch.setenv("VLKIT_DEBUG", "1")
    with pytest.raises(ConfigError, match="alpha must be >= 0"):
        main()


def test_as_a_program_the_error_is_one_line_and_no_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("VLKIT_DEBUG", None)
    argv = [sys.executable, "-m", "vlkit.cli", "test", "--config", str(TFUP), "--trainer.default_root_dir", str(tmp_path),
            "--model.init_args.cache.temperature=0"]
    run = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert run.returncode == 2, run.stderr
    assert [line for line in run.stderr.splitlines() if line.startswith("error:")] == [
        "error: model.init_args.cache.temperature must be > 0, got 0.0"
    ]
    assert "Traceback" not in run.stderr and run.stderr.rstrip().endswith("got 0.0")


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["--model.init_args.cache.alpha=abc"], 'Parser key "model"'),  # a type error: jsonargparse's own message
        (["--model.init_args.no_such_argument=1"], "no_such_argument"),
    ],
)
def test_parse_errors_keep_their_usage_line_and_exit_2(arguments, expected, capsys):
    with pytest.raises(SystemExit) as info:
        main(["test", "--config", str(TFUP), *arguments])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("usage: ") and "Traceback" not in err and expected in err


def test_a_missing_config_file_exits_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["test", "--config", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "nope.yaml" in err and "Traceback" not in err


def test_help_still_works(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "fit" in capsys.readouterr().out


def test_checkpoints_are_loaded_with_weights_only(capsys):
    # Trainer.test(weights_only=...) exists in this Lightning; the CLI's default makes it True
    with pytest.raises(SystemExit):
        main(["test", "--config", str(TFUP), "--print_config"])
    assert "weights_only: true" in capsys.readouterr().out


def test_a_config_error_raised_while_parsing_is_surfaced_as_itself():
    # jsonargparse hands its error() the exception it caught; a ConfigError anywhere in its chain wins
    original = ConfigError("lr must be > 0, got -0.1", argument="lr")
    try:
        try:
            raise original
        except ConfigError as inner:
            raise ValueError("Does not validate against any of the Union subtypes ...") from inner
    except ValueError as wrapped:
        assert find_config_error(wrapped) is original
        parser = VlkitArgumentParser(exit_on_error=True)
        with pytest.raises(ConfigError) as info:
            parser.error("Does not validate ...", wrapped)
        assert info.value is original
    assert find_config_error(ValueError("plain")) is None


def test_the_error_line_names_the_config_key():
    error = ConfigError("lr must be > 0, got -0.1", argument="lr")
    error.config_key = "model.init_args.lr"
    assert _user_error_line(error) == "error: model.init_args.lr must be > 0, got -0.1"
    other = ConfigError("mode='tip-adapter' needs labelled shots, got 0", argument="shots")
    other.config_key = "data.init_args.shots"
    assert _user_error_line(other) == "error: data.init_args.shots: mode='tip-adapter' needs labelled shots, got 0"
    # 'lr' is not the argument 'lr_decay': no partial replacement
    partial = ConfigError("lr_decay must be > 0, got 0", argument="lr")
    partial.config_key = "model.init_args.lr"
    assert _user_error_line(partial) == "error: model.init_args.lr: lr_decay must be > 0, got 0"
    assert _user_error_line(ConfigError("x must be 1, got 2", argument="x")) == "error: x must be 1, got 2"
