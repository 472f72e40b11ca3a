"""Walks every module's imports and fails on an arrow ARCHITECTURE.md forbids."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# (package prefix of the importing file, forbidden import prefixes)
RULES = [
    ("vlkit/functional", ("lightning", "vlkit.models", "vlkit.data", "vlkit.methods", "prompts_evo", "recsys")),
    ("vlkit/models", ("lightning", "vlkit.data", "vlkit.methods", "prompts_evo", "recsys")),
    ("vlkit/data", ("vlkit.models", "vlkit.methods", "prompts_evo", "recsys")),
    ("vlkit/methods", ("prompts_evo", "recsys")),
    ("vlkit/cli.py", ("vlkit.methods", "vlkit.data", "prompts_evo", "recsys")),
    ("vlkit", ("prompts_evo", "recsys")),
    ("prompts_evo/functional", ("lightning", "prompts_evo.methods")),
    ("recsys/functional", ("lightning", "recsys.models", "recsys.data", "recsys.methods")),
    ("recsys/models", ("lightning", "recsys.data", "recsys.methods")),
    ("recsys/data", ("recsys.models", "recsys.methods")),
    # recsys builds on vlkit layer by layer: a recsys layer may use vlkit's same or lower layers only
    ("recsys/functional", ("vlkit.models", "vlkit.data", "vlkit.methods")),
    ("recsys/models", ("vlkit.data", "vlkit.methods")),
    ("recsys/data", ("vlkit.models", "vlkit.methods")),
    ("recsys/methods", ("vlkit.methods",)),
    ("recsys", ("prompts_evo",)),
    # prompts_evo: the same four layers, on vlkit's same or lower layers; only demos, notebooks and
    # scripts use its notebook API (prompts_evo.fewshot)
    ("prompts_evo/functional", ("prompts_evo.models", "prompts_evo.data", "prompts_evo.fewshot", "vlkit.models",
                                "vlkit.data", "vlkit.methods")),
    ("prompts_evo/models", ("lightning", "prompts_evo.data", "prompts_evo.methods", "vlkit.data", "vlkit.methods")),
    ("prompts_evo/data", ("prompts_evo.models", "prompts_evo.methods", "vlkit.models", "vlkit.methods")),
    ("prompts_evo/methods", ("vlkit.methods",)),
    ("prompts_evo", ("prompts_evo.fewshot", "recsys")),
]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _violations() -> list[str]:
    bad = []
    for path in sorted(ROOT.glob("*/**/*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for prefix, forbidden in RULES:
            if not rel.startswith(prefix):
                continue
            for name in _imports(path):
                if any(name == f or name.startswith(f + ".") for f in forbidden):
                    bad.append(f"{rel} imports {name}")
    # methods must not import one another
    for path in sorted(ROOT.glob("*/methods/*.py")):
        rel = path.relative_to(ROOT).as_posix()
        own = rel.removesuffix(".py").replace("/", ".")
        for name in _imports(path):
            if ".methods." in name and name != own and not name.endswith("__init__"):
                bad.append(f"{rel} imports another method {name}")
    return bad


def test_no_forbidden_import_arrows():
    assert _violations() == []


def test_the_checker_catches_a_forbidden_arrow(tmp_path, monkeypatch):
    fake = tmp_path / "vlkit" / "functional"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("import lightning\nfrom vlkit.methods.tfup import LitTFUP\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert sorted(_violations()) == ["vlkit/functional/bad.py imports lightning", "vlkit/functional/bad.py imports vlkit.methods.tfup"]


def test_import_vlkit_is_light():
    import subprocess
    import sys

    code = "import sys, vlkit; print(any(m.split('.')[0] in ('open_clip', 'transformers', 'gradio', 'lightning') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
