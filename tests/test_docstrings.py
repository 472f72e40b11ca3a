"""Docstrings everywhere a reader or ``--model.help`` looks, and a map (docs/architecture.md) that cannot rot.

What is checked, and why no name is exempt:

- every module of ``vlkit/``, ``prompts_evo/`` and ``recsys/`` that holds code opens with a docstring;
- every public module-level function and class, and every public method of every module-level class
  (public: the name does not start with ``_``) has one. Lightning and torch overrides (``training_step``,
  ``setup``, ``configure_optimizers``, ``on_*`` hooks, ``forward``) count as public: what *this* module's
  hook does (which loss, which metric, what it caches) is exactly what a reader looks for, and a one-line
  docstring says it. Methods of private base classes count too, since public ``Lit*`` modules inherit
  them. Only property setters/deleters (documented by their getter) and ``typing.overload`` stubs are
  skipped;
- every ``__init__`` argument of every class a config under ``configs/`` names by ``class_path`` (the
  ``Lit*`` modules, DataModules, callbacks) has a description that jsonargparse finds (a Google-style
  ``Args:`` entry in the class or ``__init__`` docstring, one line per argument), and so do the fields of a
  dataclass argument group; ``vlkit fit --model.help`` then prints it;
- every file path that ``docs/architecture.md`` names exists.
"""

import ast
import contextlib
import dataclasses
import importlib
import inspect
import io
import logging
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vlkit", "prompts_evo", "recsys")


def _is_skipped_method(node: ast.FunctionDef) -> bool:
    for decorator in node.decorator_list:
        if isinstance(decorator, ast.Attribute) and decorator.attr in ("setter", "deleter"):
            return True  # documented by the property's getter
        name = decorator.attr if isinstance(decorator, ast.Attribute) else getattr(decorator, "id", "")
        if name == "overload":
            return True
    return False


def missing_docstrings(path: Path, root: Path = ROOT) -> list[str]:
    """``"file:line name"`` for each module, public function, class or method in ``path`` without a docstring."""
    rel = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(), filename=rel)
    missing = []
    if tree.body and not ast.get_docstring(tree):
        missing.append(f"{rel}:1 <module>")
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        if isinstance(node, functions) and not node.name.startswith("_") and not ast.get_docstring(node):
            missing.append(f"{rel}:{node.lineno} {node.name}")
        elif isinstance(node, ast.ClassDef):
            if not node.name.startswith("_") and not ast.get_docstring(node):
                missing.append(f"{rel}:{node.lineno} {node.name}")
            for sub in node.body:
                if (
                    isinstance(sub, functions)
                    and not sub.name.startswith("_")
                    and not _is_skipped_method(sub)
                    and not ast.get_docstring(sub)
                ):
                    missing.append(f"{rel}:{sub.lineno} {node.name}.{sub.name}")
    return missing


def _package_files(root: Path = ROOT) -> list[Path]:
    return sorted(p for package in PACKAGES for p in (root / package).rglob("*.py"))


def test_public_functions_classes_and_methods_have_docstrings():
    missing = [m for path in _package_files() for m in missing_docstrings(path)]
    assert missing == []


def test_the_docstring_checker_finds_what_is_missing(tmp_path):
    module = tmp_path / "vlkit" / "demo.py"
    module.parent.mkdir()
    module.write_text(
        "def public():\n    pass\n\n\ndef _private():\n    pass\n\n\n"
        "class _Base:\n    def training_step(self):\n        pass\n\n    def _helper(self):\n        pass\n\n\n"
        "class Lit(_Base):\n    '''Documented.'''\n\n    @property\n    def rate(self):\n        '''Documented.'''\n"
        "\n    @rate.setter\n    def rate(self, value):\n        pass\n\n    def forward(self):\n        pass\n"
    )
    assert missing_docstrings(module, tmp_path) == [
        "vlkit/demo.py:1 <module>",
        "vlkit/demo.py:1 public",
        "vlkit/demo.py:10 _Base.training_step",
        "vlkit/demo.py:28 Lit.forward",
    ]
    (tmp_path / "vlkit" / "empty.py").write_text("")
    assert missing_docstrings(tmp_path / "vlkit" / "empty.py", tmp_path) == []  # an empty __init__ needs none


# ----------------------------------------------------------------------------------------------------------
# Argument descriptions, as jsonargparse reads them for `--model.help` / `--data.help`


def _config_class_paths() -> list[str]:
    """Every class of ours that a config names by ``class_path`` (model, data, callbacks, ...)."""
    found = set()

    def walk(node):
        if isinstance(node, dict):
            path = node.get("class_path")
            if isinstance(path, str) and path.split(".")[0] in PACKAGES:
                found.add(path)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for config in sorted((ROOT / "configs").rglob("*.yaml")):
        walk(yaml.safe_load(config.read_text()))
    return sorted(found)


def _undocumented_arguments(cls) -> list[str]:
    """Names of ``cls.__init__`` arguments (and fields of dataclass-typed arguments) with no description."""
    from jsonargparse._optionals import parse_docs  # the function jsonargparse's help uses

    docs = parse_docs(cls.__init__, cls, logging.getLogger(__name__))
    missing = []
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if not (docs.get(name) or "").strip():
            missing.append(name)
        group = param.annotation
        if isinstance(group, str):  # postponed annotations
            group = getattr(sys.modules[cls.__module__], group, None)
        if inspect.isclass(group) and dataclasses.is_dataclass(group):
            field_docs = parse_docs(group, None, logging.getLogger(__name__))
            missing += [f"{name}.{f.name}" for f in dataclasses.fields(group) if not (field_docs.get(f.name) or "").strip()]
    return missing


def test_config_classes_document_every_init_argument():
    paths = _config_class_paths()
    assert "vlkit.methods.tfup.LitTFUPT" in paths and "recsys.methods.minionerec.LitMiniOneRecRL" in paths
    undocumented = {}
    for path in paths:
        module, _, name = path.rpartition(".")
        missing = _undocumented_arguments(getattr(importlib.import_module(module), name))
        if missing:
            undocumented[path] = missing
    assert undocumented == {}


def test_the_argument_checker_reads_google_style_args_only_when_it_parses():
    class Documented:
        """A class.

        Args:
            lr: the learning rate, > 0.
            steps: how many.
        """

        def __init__(self, lr: float = 0.1, steps: int = 1, seed: int = 0):
            pass

    class Grouped:
        """Two names on one line are one unknown name for the parser.

        Args:
            lr, steps: settings.
        """

        def __init__(self, lr: float = 0.1, steps: int = 1):
            pass

    assert _undocumented_arguments(Documented) == ["seed"]
    assert _undocumented_arguments(Grouped) == ["lr", "steps"]


def _help_descriptions(text: str, prefix: str) -> dict[str, str]:
    """Map ``--<prefix>.<arg>`` options of a jsonargparse help text to their description, without the
    ``(type: ..., default: ...)`` tail."""
    start = text.index("Help for --")
    blocks = re.split(rf"\n  (?=--{re.escape(prefix)}\.)", text[start:])[1:]
    out = {}
    for block in blocks:
        option = block.split()[0]
        name = option[len(prefix) + 3 :].rstrip(",").removesuffix("+")
        body = " ".join(block.split())
        body = body[: body.rfind("(type:")] if "(type:" in body else body
        # drop the option signature: "--model.lr LR" or "--model.templates T, --model.templates+ T"
        body = re.sub(rf"^(--{re.escape(prefix)}\.\S+ \S+,? ?)+", "", body).strip()
        out[name] = body
    return out


def test_model_help_prints_a_description_for_every_argument():
    from vlkit.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model.help", "vlkit.methods.tfup.LitTFUPT"])
    assert exit_info.value.code in (0, None)
    from vlkit.methods.tfup import LitTFUPT

    described = _help_descriptions(out.getvalue(), "model")
    arguments = []
    for name, parameter in inspect.signature(LitTFUPT.__init__).parameters.items():
        # a typed settings group (a dataclass) shows one option per field: --model.cache.alpha
        fields = dataclasses.fields(parameter.default) if dataclasses.is_dataclass(parameter.default) else ()
        arguments += [f"{name}.{field.name}" for field in fields] or ([name] if name != "self" else [])
    assert "cache.alpha" in arguments
    assert sorted(described) == sorted(arguments)
    assert {name: text for name, text in described.items() if not text} == {}
    assert "AdamW" in described["lr"]  # the text comes from the docstring's Args: entry


def test_help_parser_sees_an_empty_description():
    text = (
        "Help for --model.help=x.Y\n\nY:\n  --model.lr LR         the learning rate (type: float, default: 0.1)\n"
        "  --model.templates TEMPLATES, --model.templates+ TEMPLATES\n                        (type: Optional[list[str]], "
        "default: null)\n"
    )
    assert _help_descriptions(text, "model") == {"lr": "the learning rate", "templates": ""}


# ----------------------------------------------------------------------------------------------------------
# docs/architecture.md


def _paths_named_in(markdown: str) -> list[str]:
    """Repository paths written in backticks: ``vlkit/cache.py``, ``configs/vlkit/repri/``, globs too (not
    templates such as ``configs/<package>/<stem>/``)."""
    paths = []
    for token in re.findall(r"`([^`\s]+)`", markdown):
        token = token.rstrip(",.:;")
        if "/" in token and "<" not in token and token.split("/")[0] in {*PACKAGES, "configs", "tests", "demos", "bench", "docs",
                                                     "notebooks", "scripts"}:
            paths.append(token)
    return paths


def test_every_path_in_the_architecture_map_exists():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    paths = _paths_named_in(doc)
    assert len(paths) >= 40  # the map names the files of every method at every layer
    missing = [p for p in paths if not (any(ROOT.glob(p)) if "*" in p else (ROOT / p).exists())]
    assert missing == []
    for shared in ("vlkit/errors.py", "vlkit/cache.py", "vlkit/checkpoints.py", "vlkit/callbacks.py",
                   "vlkit/functional/policy.py", "vlkit/models/policy.py"):
        assert shared in paths, shared


def test_the_path_finder_reads_backticked_paths():
    text = ("The loss: `vlkit/functional/repri.py`, configs in `configs/vlkit/repri/*.yaml`. Not `torch.nn`, `a b` "
            "or `configs/<package>/<stem>.yaml`.")
    assert _paths_named_in(text) == ["vlkit/functional/repri.py", "configs/vlkit/repri/*.yaml"]
