"""Every YAML under configs/ parses against its classes (``--print_config`` validates without running)."""

import contextlib
import io
from pathlib import Path

import pytest
import yaml

from vlkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
METHOD_CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if "trainer" not in p.parts)
TRAINER_PRESETS = sorted((ROOT / "configs" / "trainer").glob("*.yaml"))


def _print_config(*configs: Path) -> dict:
    out = io.StringIO()
    args = ["fit"]
    for c in configs:
        args += ["--config", str(c)]
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main(args + ["--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(out.getvalue())


@pytest.mark.parametrize("config", METHOD_CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_parses(config):
    parsed = _print_config(config)
    declared = yaml.safe_load(config.read_text())
    assert parsed["model"]["class_path"] == declared["model"]["class_path"]
    # every init arg the file sets survives parsing with its value (inside a typed group, such as
    # ProAPO's `search`, the keys the file sets; the group's other fields take their defaults)
    def survives(set_value, parsed_value):
        if isinstance(set_value, dict) and isinstance(parsed_value, dict):
            return all(k in parsed_value and survives(v, parsed_value[k]) for k, v in set_value.items())
        return parsed_value == set_value

    for key, value in (declared["model"].get("init_args") or {}).items():
        assert survives(value, parsed["model"]["init_args"][key]), key


@pytest.mark.parametrize("preset", TRAINER_PRESETS, ids=lambda p: p.name)
def test_trainer_presets_compose_with_a_method_config(preset):
    parsed = _print_config(preset, ROOT / "configs" / "vlkit" / "tfup" / "tiny_tfup.yaml")
    assert parsed["trainer"]["devices"] in (1, -1, "1", "-1", "auto")


def test_every_config_header_names_its_run_command():
    def header(path):
        return [line for line in path.read_text().splitlines() if line.startswith("#")]

    missing = [str(p.relative_to(ROOT)) for p in METHOD_CONFIGS if not any(h.startswith("# Run:") for h in header(p))]
    assert missing == []
