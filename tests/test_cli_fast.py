"""The CLI answers fast and explains itself.

- ``vlkit --help``, ``vlkit --version`` and ``vlkit demo --help`` import neither torch nor Lightning (checked
  on ``sys.modules`` of a fresh interpreter: a property, not a timing; bench/cli.py measures the time);
- the help lists every subcommand (Lightning's four and ``demo``), ``vlkit demo`` takes exactly the options
  of ``python -m demos``;
- ``vlkit fit --help`` lists the kit's Lit modules and DataModules, ``--model.help <short name>`` prints the
  docstring's description of every argument (checked against docstring-parser's own reading);
- the kit's Trainer defaults drop Lightning's tip and hardware lines and nothing else, and the CLI seeds 0
  unless the config says otherwise (no "No seed found").
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import json
import logging
import re
import subprocess
import sys
import tomllib
import warnings
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "lightning", "pytorch_lightning", "jsonargparse", "gradio", "transformers", "open_clip", "numpy")

# runs vlkit._entry.main in a fresh interpreter, then reports which heavy packages got imported
_PROBE = """
import json, sys
PRELOAD
from vlkit._entry import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as exit_:
    code = exit_.code or 0
heavy = sorted({name.split('.')[0] for name in sys.modules} & set(json.loads(HEAVY)))
print('PROBE ' + json.dumps({'code': code, 'heavy': heavy}))
"""


def _probe(*args: str, preload: str = "") -> tuple[str, dict]:
    code = _PROBE.replace("HEAVY", repr(json.dumps(HEAVY))).replace("PRELOAD", f"import {preload}" if preload else "")
    done = subprocess.run([sys.executable, "-c", code, *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    out, _, report = done.stdout.rpartition("PROBE ")
    assert report, done.stderr
    return out, json.loads(report)


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--version"], ["demo", "--help"]])
def test_help_version_and_demo_help_import_no_torch(args):
    out, report = _probe(*args)
    assert report == {"code": 0, "heavy": []}, out
    assert out.strip()


def test_the_probe_sees_a_heavy_import():
    # the same probe reports a heavy package the process did import (so the test above can fail)
    _, report = _probe("--version", preload="numpy")
    assert report == {"code": 0, "heavy": ["numpy"]}


def test_the_console_script_is_the_light_entry():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["vlkit"] == "vlkit._entry:main"
    script = Path(sys.executable).with_name("vlkit")
    if not script.exists():
        pytest.skip("no vlkit script next to this interpreter")
    if "vlkit._entry" not in script.read_text(errors="replace"):
        pytest.skip(f"the installed {script} is older than pyproject.toml: re-run `make setup`")
    # -X importtime lists every module the script imports, one line each, on stderr
    done = subprocess.run([sys.executable, "-X", "importtime", str(script), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "demo" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert "vlkit" in imported and not imported & set(HEAVY)


def test_help_lists_every_subcommand_including_demo():
    from lightning.pytorch.cli import LightningCLI

    from vlkit._entry import SUBCOMMANDS, help_text

    expected = [*LightningCLI.subcommands(), "demo"]
    assert list(SUBCOMMANDS) == expected
    text = help_text()
    assert "{" + ",".join(expected) + "}" in text.splitlines()[0]
    listed = [line.split()[0] for line in text.split("subcommands")[1].split("options:")[0].splitlines()[1:] if line.strip()]
    assert listed == expected


def test_no_subcommand_exits_2_with_the_help(capsys):
    from vlkit._entry import main

    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "demo" in capsys.readouterr().err


def test_version_names_the_installed_versions(capsys):
    from vlkit import __version__
    from vlkit._entry import main

    main(["--version"])
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"vlkit {__version__} (torch {metadata.version('torch')}, lightning {metadata.version('lightning')}")


def _options(help_text: str, prog: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", help_text.replace(prog, "")))


def test_vlkit_demo_takes_the_options_of_python_m_demos(capsys):
    from demos.__main__ import main as demos_main
    from vlkit._entry import main

    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    ours = capsys.readouterr().out
    with pytest.raises(SystemExit):
        demos_main(["--help"])
    theirs = capsys.readouterr().out
    assert ours.startswith("usage: vlkit demo") and theirs.startswith("usage: python -m demos")
    options = _options(ours, "vlkit demo")
    assert options == _options(theirs, "python -m demos") and {"--host", "--port", "--auth", "--no-auth"} <= options


def test_other_command_lines_go_to_the_lightning_cli(monkeypatch):
    import types

    from vlkit._entry import main

    calls = []
    fake = types.ModuleType("vlkit.cli")
    fake.main = calls.append
    monkeypatch.setitem(sys.modules, "vlkit.cli", fake)  # the real one imports Lightning
    main(["fit", "--config", "x.yaml"])
    main(["-c", "x.yaml", "test"])
    assert calls == [["fit", "--config", "x.yaml"], ["-c", "x.yaml", "test"]]


# -- the Lightning side ------------------------------------------------------------------------------------


def _cli_stdout(*args: str) -> str:
    from vlkit.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code in (0, None)
    return out.getvalue()


def test_fit_help_lists_the_kit_modules():
    text = " ".join(_cli_stdout("fit", "--help").split())
    model = text[text.index("--model CONFIG"):text.index("--data.help")]
    data = text[text.index("--data CONFIG"):]
    for name in ("vlkit.methods.tfup.LitTFUP", "vlkit.methods.tfup.LitTFUPT", "vlkit.methods.repri.LitRePRI",
                 "vlkit.methods.ares.LitARES", "recsys.methods.minionerec.LitMiniOneRec", "LitProAPO"):
        assert name in model, name
    for name in ("vlkit.data.fewshot.FewShotDataModule", "SeqRecDataModule", "ProAPODataModule"):
        assert name in data, name


def _documented(cls) -> dict[str, str]:
    """Argument -> description from the Google-style docstrings of ``cls`` and its bases (what jsonargparse
    reads), through docstring-parser directly."""
    import docstring_parser

    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        for doc in (klass.__doc__, getattr(klass.__init__, "__doc__", None)):
            if klass.__module__.split(".")[0] in ("vlkit", "recsys", "prompts_evo") and doc:
                out.update({p.arg_name: p.description or "" for p in docstring_parser.parse(doc).params})
    return out


@pytest.mark.parametrize("short, class_path", [("LitTFUP", "vlkit.methods.tfup.LitTFUP"),
                                               ("LitMiniOneRec", "recsys.methods.minionerec.LitMiniOneRec")])
def test_model_help_by_short_name_shows_every_argument_description(short, class_path):
    import importlib

    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    text = _cli_stdout("fit", "--model.help", short)
    assert f"Help for --model.help={class_path}" in text
    squeezed = "".join(text.split())  # argparse wraps (and may split at hyphens): compare without whitespace
    documented = _documented(cls)
    plain = [n for n, p in inspect.signature(cls.__init__).parameters.items()
             if n != "self" and not dataclasses.is_dataclass(p.default)]
    assert plain
    for argument in plain:
        description = documented.get(argument, "")
        assert description, f"{argument} has no Args: entry"
        assert "".join(description.split())[:60] in squeezed, argument


def test_cli_seeds_0_unless_the_config_says_otherwise():
    tiny = ROOT / "configs" / "vlkit" / "tfup" / "tiny_tfup.yaml"  # sets no seed_everything
    assert "seed_everything: 0" in _cli_stdout("test", "--config", str(tiny), "--print_config").splitlines()
    seeded = ROOT / "configs" / "vlkit" / "tfup" / "fashion_mnist_tfupt.yaml"  # seed_everything: 1
    assert "seed_everything: 1" in _cli_stdout("fit", "--config", str(seeded), "--print_config").splitlines()


def test_quiet_lightning_drops_the_tip_and_hardware_lines_only(monkeypatch):
    import lightning as L
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    from vlkit.trainer_defaults import _LOGGERS, quiet_lightning

    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    for parent in ("lightning.pytorch", "lightning.fabric", "lightning_utilities"):
        monkeypatch.setattr(logging.getLogger(parent), "handlers", [handler])
        monkeypatch.setattr(logging.getLogger(parent), "level", logging.INFO)
    for name in _LOGGERS:  # start loud, whatever an earlier test did
        monkeypatch.setattr(logging.getLogger(name), "filters", [])

    def build() -> list[str]:
        seen.clear()
        L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_model_summary=False)
        rank_zero_info("an epoch summary stays")
        return list(seen)

    loud = build()
    assert any(m.startswith("GPU available:") for m in loud) and any("litlogger" in m for m in loud)
    quiet_lightning()
    quiet_lightning()  # idempotent
    quiet = build()
    assert quiet == [m for m in loud if not m.startswith(("GPU available:", "TPU available:", "💡 Tip:"))]
    assert "an epoch summary stays" in quiet


def test_quiet_lightning_drops_lightnings_leafspec_future_warning():
    from lightning.pytorch.utilities.combined_loader import CombinedLoader

    from vlkit.trainer_defaults import quiet_lightning

    def leafspec_warnings(quiet: bool) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if quiet:
                quiet_lightning()
            CombinedLoader([1, 2])  # Lightning flattens the iterables with a LeafSpec
        return [str(w.message) for w in caught if "LeafSpec" in str(w.message)]

    if not leafspec_warnings(quiet=False):
        pytest.skip("this torch does not deprecate LeafSpec")
    assert leafspec_warnings(quiet=True) == []


def test_quiet_lightning_drops_peft_probe_warning_and_keeps_others():
    from vlkit.trainer_defaults import quiet_lightning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_lightning()
        # the text transformers warns with when peft reads model.is_gradient_checkpointing
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6. Use "
                      "`is_activation_checkpointing` instead.", FutureWarning)
        warnings.warn("`something_else` is deprecated", FutureWarning)
    assert [str(w.message) for w in caught] == ["`something_else` is deprecated"]
