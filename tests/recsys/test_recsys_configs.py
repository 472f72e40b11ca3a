from pathlib import Path

import pytest
import yaml

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "recsys"
CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))


def test_there_are_configs_for_every_stage():
    stems = {p.parent.name for p in CONFIGS}
    assert {"rqvae", "sasrec", "minionerec"} <= stems
    for p in CONFIGS:
        head = p.read_text().splitlines()[:6]
        assert any(line.startswith("# Run:") for line in head), f"{p.name}: header lacks the run command"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_parses_against_its_classes(path, capsys):
    from vlkit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    source = yaml.safe_load(path.read_text())
    assert printed["model"]["class_path"] == source["model"]["class_path"]
    # every init arg written in the file survived parsing with the same value (in a settings group such as
    # `decoder:` every field written; the printed group adds the defaults of the others)
    def check(got, value, key):
        if isinstance(value, dict):
            for field, field_value in value.items():
                check(got[field], field_value, f"{key}.{field}")
        else:
            assert got == value or (isinstance(value, list) and list(got) == value), key

    for key, value in source["model"]["init_args"].items():
        check(printed["model"]["init_args"][key], value, key)
