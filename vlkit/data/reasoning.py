"""Reasoning problems with verifiable answers, and the ARES adaptive cold-start builder.

- ``generate_arithmetic_problems``: a generated arithmetic task with difficulty levels 1-5 (from a
  one-digit sum to a three-operation expression with two- and three-digit numbers) and exact integer
  answers; optionally as multiple choice, and optionally rendered into an image (for VLMs).
- The answer checkers live in ``vlkit.data.verifier`` (``check_answer``, ``parse_number``, ...): the reward.
- ``build_adaptive_cold_start``: ARES' adaptive cold start (AdaCS): problems with measured pass rates p
  become SFT examples whose reasoning length tracks L_target(p) = (1 - p) L(0) + p L(1), L(0) and L(1)
  the median candidate lengths at pass rates 0 and 1 (the authors did not ship this code).
- ``ReasoningDataModule`` (RL prompts) and ``ColdStartSFTDataModule`` (SFT pairs).

Batches of ``ReasoningDataModule`` are dicts (B = prompts per batch):
    ``prompt``: list[str] (B), ``answer``: list[str] (B), ``answer_type``: list[str] (B) in
    {"number", "choice"}, ``prompt_id``: LongTensor (B,) stable hash of the prompt, ``level``:
    LongTensor (B,) difficulty level (0 when unknown), and ``image``: list[PIL.Image] (B) when images
    are on. Tokenisation happens in the method (chat template, left padding for generation).
Batches of ``ColdStartSFTDataModule``: ``prompt``, ``response``: list[str] (B), ``pass_rate``: (B,).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from vlkit.data.sharding import evaluation_sampler
from vlkit.errors import ConfigError, check_file, check_int, check_number
from vlkit.data.verifier import ANSWER_TYPES, check_answer, parse_number

__all__ = [
    "ANSWER_TYPES",
    "ReasoningProblem",
    "ColdStartExample",
    "generate_arithmetic_problems",
    "load_problems_jsonl",
    "render_problem_image",
    "solution_candidates",
    "target_length",
    "build_adaptive_cold_start",
    "estimate_pass_rates",
    "ReasoningDataset",
    "ReasoningDataModule",
    "ColdStartSFTDataset",
    "ColdStartSFTDataModule",
]

ANSWER_INSTRUCTION = "Put the final answer in \\boxed{}."
CHOICE_INSTRUCTION = "Answer with the letter of the correct option in \\boxed{}."
LEVELS = (1, 2, 3, 4, 5)


@dataclass
class ReasoningProblem:
    """One problem: ``question`` (without the answer instruction), ``answer`` (a number or a letter)."""

    question: str
    answer: str
    answer_type: str = "number"
    level: int = 0
    steps: list[str] = field(default_factory=list)  # worked steps, e.g. "12 + 7 = 19"
    choices: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not isinstance(self.question, str) or not self.question.strip():
            raise ConfigError(f"question must be a non-empty string, got {self.question!r}", argument="question")
        if self.answer is None or not str(self.answer).strip():
            raise ConfigError(
                f"answer must be non-empty, got none: problem {self.question[:60]!r} has no answer; every prompt "
                "needs a verifiable answer",
                argument="answer",
            )
        if self.answer_type not in ANSWER_TYPES:
            raise ConfigError(f"answer_type must be one of {ANSWER_TYPES}, got {self.answer_type!r}", argument="answer_type")
        check_int("level", self.level, low=0, high=max(LEVELS))
        self.answer = str(self.answer).strip()
        if self.answer_type == "number" and parse_number(self.answer) is None:
            raise ConfigError(f"answer {self.answer!r} of {self.question[:60]!r} is not a number", argument="answer")
        if self.answer_type == "choice" and self.choices:
            letters = [chr(65 + i) for i in range(len(self.choices))]
            if self.answer.upper() not in letters:
                raise ConfigError(
                    f"answer of a choice problem must be one of the option letters {letters}, got {self.answer!r}",
                    argument="answer",
                )

    @property
    def prompt(self) -> str:
        """The text sent to the model: question, options (if any) and the answer instruction."""
        if self.answer_type == "choice":
            options = "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(self.choices))
            return f"{self.question}\n{options}\n{CHOICE_INSTRUCTION}"
        return f"{self.question} {ANSWER_INSTRUCTION}"

    @property
    def prompt_id(self) -> int:
        """A stable 63-bit id from the prompt text (ARES needs a ``global_id``; here it is a hash)."""
        digest = hashlib.blake2b(self.prompt.encode("utf-8"), digest_size=8).digest()
        return int.from_bytes(digest, "big") & ((1 << 63) - 1)


# ------------------------------------------------------------------------------------------ generation
def _level_expression(level: int, rng: random.Random) -> tuple[str, int, list[str]]:
    """An expression of the given level, its value and its worked steps."""
    if level == 1:  # one-digit sum
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        return f"{a} + {b}", a + b, [f"{a} + {b} = {a + b}"]
    if level == 2:  # two-digit sum or difference
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if rng.random() < 0.5:
            return f"{a} + {b}", a + b, [f"{a} + {b} = {a + b}"]
        a, b = max(a, b), min(a, b)
        return f"{a} - {b}", a - b, [f"{a} - {b} = {a - b}"]
    if level == 3:  # product plus a number
        a, b, c = rng.randint(2, 12), rng.randint(2, 12), rng.randint(1, 20)
        return f"{a} * {b} + {c}", a * b + c, [f"{a} * {b} = {a * b}", f"{a * b} + {c} = {a * b + c}"]
    if level == 4:  # (a + b) * c - d
        a, b, c, d = rng.randint(10, 49), rng.randint(10, 49), rng.randint(2, 9), rng.randint(1, 50)
        s = a + b
        return (
            f"({a} + {b}) * {c} - {d}",
            s * c - d,
            [f"{a} + {b} = {s}", f"{s} * {c} = {s * c}", f"{s * c} - {d} = {s * c - d}"],
        )
    if level == 5:  # a * b - c * d with two- and three-digit numbers
        a, b, c, d = rng.randint(11, 99), rng.randint(11, 99), rng.randint(100, 999), rng.randint(2, 9)
        p, q = a * b, c * d
        return (
            f"{a} * {b} - {c} * {d}",
            p - q,
            [f"{a} * {b} = {p}", f"{c} * {d} = {q}", f"{p} - {q} = {p - q}"],
        )
    raise ConfigError(f"level must be one of {LEVELS}, got {level}", argument="level")


def generate_arithmetic_problems(
    n: int, levels: tuple[int, ...] | list[int] = LEVELS, seed: int = 0, multiple_choice: bool = False
) -> list[ReasoningProblem]:
    """``n`` arithmetic problems, levels cycled in order (so each level gets n / len(levels)), seeded.

    With ``multiple_choice`` each problem lists four options (the answer and three near misses).
    ``n``: an int >= 0; ``seed``: an int.
    """
    check_int("n", n, low=0)
    check_int("seed", seed)
    if isinstance(levels, (str, int)):
        raise ConfigError(f"levels must be a non-empty subset of {LEVELS}, got {levels!r}", argument="levels")
    levels = tuple(levels)
    if not levels or any(lv not in LEVELS for lv in levels):
        raise ConfigError(f"levels must be a non-empty subset of {LEVELS}, got {levels}", argument="levels")
    rng = random.Random(seed)
    problems = []
    for i in range(n):
        level = levels[i % len(levels)]
        expr, value, steps = _level_expression(level, rng)
        question = f"What is {expr}?"
        if multiple_choice:
            options = {value}
            while len(options) < 4:
                options.add(value + rng.choice([-10, -2, -1, 1, 2, 10]) * rng.randint(1, 3))
            choices = sorted(options)
            rng.shuffle(choices)
            letter = chr(65 + choices.index(value))
            problems.append(
                ReasoningProblem(question, letter, "choice", level, steps, [str(c) for c in choices])
            )
        else:
            problems.append(ReasoningProblem(question, str(value), "number", level, steps))
    return problems


def load_problems_jsonl(path: str | Path) -> list[ReasoningProblem]:
    """Problems from a JSON-lines file with keys ``question``, ``answer`` and optionally ``answer_type``,
    ``level``, ``choices``. A bad line raises ``ConfigError`` (a ``ValueError``) naming the line; a file
    without problems raises too."""
    path = check_file("problems_path", path)
    problems = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}:{lineno}: each line must be a JSON object, got invalid JSON ({err})",
                                  argument="problems_path") from err
            if not isinstance(row, dict) or "question" not in row or row.get("answer") in (None, ""):
                keys = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise ConfigError(
                    f"{path}:{lineno}: each problem needs 'question' and a non-empty 'answer', got keys {keys}",
                    argument="problems_path",
                )
            try:
                problems.append(
                    ReasoningProblem(
                        row["question"], str(row["answer"]), row.get("answer_type", "number"), int(row.get("level", 0)),
                        list(row.get("steps", [])), list(row.get("choices", [])),
                    )
                )
            except (ValueError, TypeError) as err:
                raise ConfigError(f"{path}:{lineno}: {err}", argument="problems_path") from err
    if not problems:
        raise ConfigError(f"problems_path must hold at least one problem, got an empty file {str(path)!r}",
                          argument="problems_path")
    return problems


def render_problem_image(problem: ReasoningProblem, size: int = 56):
    """The question drawn in black on a white square (the VLM variant: "solve the problem in the image");
    ``size``: an int >= 8 pixels."""
    check_int("size", size, low=8)
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    text = problem.question.replace("What is ", "").rstrip("?")
    draw.text((2, size // 2 - 6), text, fill="black")
    return image


# ------------------------------------------------------------------------------------------ cold start
def solution_candidates(problem: ReasoningProblem) -> list[str]:
    """Correct worked solutions of increasing length for a generated problem (detail 0-3)."""
    if problem.answer_type == "choice":
        final = f"\\boxed{{{problem.answer}}}"
    else:
        final = f"\\boxed{{{problem.answer}}}"
    steps = problem.steps or [f"The result is {problem.answer}."]
    expr = problem.question.replace("What is ", "").rstrip("?")
    short = f"{final}"
    medium = f"{steps[-1]}. The answer is {final}"
    full = " ".join(f"Step {i + 1}: {s}." for i, s in enumerate(steps)) + f" The answer is {final}"
    checked = (
        f"We need {expr}. "
        + " ".join(f"Step {i + 1}: {s}." for i, s in enumerate(steps))
        + " Let me check each step again: "
        + " ".join(f"{s} is right." for s in steps)
        + f" So the answer is {final}"
    )
    return [short, medium, full, checked]


def target_length(pass_rate: float, length_at_0: float, length_at_1: float) -> float:
    """AdaCS target length L_target(p) = (1 - p) L(0) + p L(1); p in [0, 1], lengths finite and >= 0."""
    check_number("pass_rate", pass_rate, low=0, high=1)
    check_number("length_at_0", length_at_0, low=0)
    check_number("length_at_1", length_at_1, low=0)
    return (1.0 - pass_rate) * length_at_0 + pass_rate * length_at_1


@dataclass
class ColdStartExample:
    """One SFT pair of the adaptive cold start: a prompt, a response of about ``target_length`` words, the
    problem's pass rate and level (0 when unknown)."""

    prompt: str
    response: str
    pass_rate: float
    target_length: float
    level: int = 0


def build_adaptive_cold_start(
    problems: list[ReasoningProblem],
    pass_rates: list[float],
    candidates: list[list[str]] | None = None,
    length_fn: Callable[[str], int] | None = None,
    length_at_0: float | None = None,
    length_at_1: float | None = None,
) -> list[ColdStartExample]:
    """Adaptive cold start: one SFT example per problem, the candidate closest to L_target(p).

    Args:
        problems: the problems; pass_rates: measured pass rate p in [0, 1] per problem (e.g. the model's
            accuracy over k samples).
        candidates: correct solutions per problem (teacher traces); default ``solution_candidates``.
        length_fn: length of a response (e.g. token count); default whitespace word count.
        length_at_0, length_at_1: L(0) and L(1); default the median candidate length over the problems
            with p == 0 (resp. p == 1), as in the paper.

    Returns:
        one ``ColdStartExample`` per problem, in order.
    """
    if len(problems) != len(pass_rates):
        raise ConfigError(
            f"pass_rates must have one value per problem: {len(problems)} problems, {len(pass_rates)} rates",
            argument="pass_rates",
        )
    if not problems:
        raise ConfigError("problems must hold at least one problem, got an empty list", argument="problems")
    for p in pass_rates:
        if not 0.0 <= float(p) <= 1.0 or math.isnan(float(p)):
            raise ConfigError(f"pass rates must lie in [0, 1], got {p}", argument="pass_rates")
    check_number("length_at_0", length_at_0, low=0, allow_none=True)
    check_number("length_at_1", length_at_1, low=0, allow_none=True)
    if candidates is None:
        candidates = [solution_candidates(p) for p in problems]
    if len(candidates) != len(problems) or any(not c for c in candidates):
        raise ConfigError("candidates must hold a non-empty list of solutions per problem", argument="candidates")
    length_fn = length_fn or (lambda s: len(s.split()))
    lengths = [[length_fn(c) for c in cands] for cands in candidates]

    def median_at(rate: float) -> float | None:
        pool = [ln for p, lns in zip(pass_rates, lengths) if float(p) == rate for ln in lns]
        return float(statistics.median(pool)) if pool else None

    l0 = length_at_0 if length_at_0 is not None else median_at(0.0)
    l1 = length_at_1 if length_at_1 is not None else median_at(1.0)
    if l0 is None or l1 is None:
        raise ConfigError(
            "no problem has pass rate exactly 0 (or 1) to measure L(0) (or L(1)); pass length_at_0 and length_at_1",
            argument="length_at_0",
        )
    examples = []
    for prob, p, cands, lns in zip(problems, pass_rates, candidates, lengths):
        goal = target_length(float(p), l0, l1)
        best = min(range(len(cands)), key=lambda i: (abs(lns[i] - goal), lns[i]))  # ties: the shorter
        examples.append(ColdStartExample(prob.prompt, cands[best], float(p), goal, prob.level))
    return examples


def estimate_pass_rates(policy, problems: list[ReasoningProblem], samples: int = 4, batch_prompts: int = 8) -> list[float]:
    """Measured pass rate of a policy on each problem, the input of :func:`build_adaptive_cold_start`.

    Args:
        policy: anything with ``sample_texts(prompts, samples) -> list[str]`` returning ``samples``
            completions per prompt, grouped by prompt (``LitARES`` has it).
        problems: the problems to measure.
        samples: completions per problem, an int >= 1.
        batch_prompts: problems per call of ``sample_texts``, an int >= 1.

    Returns:
        one pass rate per problem: the fraction of its completions that ``check_answer`` accepts.
    """
    check_int("samples", samples, low=1)
    check_int("batch_prompts", batch_prompts, low=1)
    rates: list[float] = []
    for start in range(0, len(problems), batch_prompts):
        chunk = problems[start : start + batch_prompts]
        texts = policy.sample_texts([p.prompt for p in chunk], samples)  # len(chunk) * samples, grouped
        for i, problem in enumerate(chunk):
            scores = [check_answer(t, problem.answer, problem.answer_type) for t in texts[i * samples : (i + 1) * samples]]
            rates.append(sum(scores) / samples)
    return rates


# ------------------------------------------------------------------------------------------ datasets
class ReasoningDataset(Dataset):
    """Problems as dicts for ``ReasoningDataModule`` (see the module docstring for the keys).

    Args:
        problems: the problems, in order.
        with_images: add each question rendered as an ``image`` and point the prompt at it.
        image_size: side of the rendered image, an int >= 8.
    """

    def __init__(self, problems: list[ReasoningProblem], with_images: bool = False, image_size: int = 56):
        check_int("image_size", image_size, low=8)
        self.problems = list(problems)
        self.with_images = with_images
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.problems)

    def __getitem__(self, index: int) -> dict:
        p = self.problems[index]
        item = {
            "prompt": p.prompt if not self.with_images else p.prompt.replace(p.question, "Solve the problem in the image."),
            "answer": p.answer,
            "answer_type": p.answer_type,
            "prompt_id": p.prompt_id,
            "level": p.level,
        }
        if self.with_images:
            item["image"] = render_problem_image(p, self.image_size)
        return item


def collate_reasoning(items: list[dict]) -> dict:
    """Batch :class:`ReasoningDataset` items: strings as lists, ``prompt_id`` and ``level`` as (B,) tensors."""
    batch = {
        "prompt": [it["prompt"] for it in items],
        "answer": [it["answer"] for it in items],
        "answer_type": [it["answer_type"] for it in items],
        "prompt_id": torch.tensor([it["prompt_id"] for it in items], dtype=torch.long),  # (B,)
        "level": torch.tensor([it["level"] for it in items], dtype=torch.long),  # (B,)
    }
    if "image" in items[0]:
        batch["image"] = [it["image"] for it in items]
    return batch


def _check_levels(levels) -> None:
    if isinstance(levels, (str, int)) or not levels or any(lv not in LEVELS for lv in levels):
        raise ConfigError(f"levels must be a non-empty subset of {list(LEVELS)}, got {levels!r}", argument="levels")


class ReasoningDataModule(L.LightningDataModule):
    """Prompts with verifiable answers for RL (ARES / GRPO): the generated arithmetic task or a JSONL file.

    Args:
        train_size: generated training problems, an int >= 0; >= prompts_per_batch unless ``problems_path``
            is given (the last partial batch is dropped).
        val_size: generated validation problems (seed + 1), an int >= 0.
        test_size: generated test problems (seed + 2), an int >= 0.
        levels: difficulty levels of the generated task (1 = one-digit sum ... 5 = three operations).
        prompts_per_batch: prompts per training batch, an int >= 1 (each is sampled G times by the method).
        eval_batch_size: prompts per validation/test batch, an int >= 1.
        seed: generation seed, an int (train uses seed, val seed + 1, test seed + 2).
        multiple_choice: four-option questions answered with a letter.
        with_images: render each question into an image (vision-language models); the text prompt then
            says "Solve the problem in the image."
        problems_path: an existing JSONL file of problems (``question``, ``answer``, ...) used instead of the
            generated train split.
        num_workers: DataLoader workers, an int >= 0.
    """

    def __init__(
        self,
        train_size: int = 512,
        val_size: int = 100,
        test_size: int = 100,
        levels: list[int] = [1, 2, 3, 4, 5],
        prompts_per_batch: int = 4,
        eval_batch_size: int = 16,
        seed: int = 0,
        multiple_choice: bool = False,
        with_images: bool = False,
        problems_path: str | None = None,
        num_workers: int = 0,
    ):
        super().__init__()
        check_int("prompts_per_batch", prompts_per_batch, low=1)
        check_int("eval_batch_size", eval_batch_size, low=1)
        for name, value in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
            check_int(name, value, low=0)
        _check_levels(levels)
        check_int("seed", seed)
        check_int("num_workers", num_workers, low=0)
        if problems_path is not None:
            check_file("problems_path", problems_path)
        elif 0 < train_size < prompts_per_batch:  # drop_last: no training batch at all
            raise ConfigError(
                f"train_size must be >= prompts_per_batch={prompts_per_batch} (the last partial batch is dropped), "
                f"got {train_size}",
                argument="train_size",
            )
        self.save_hyperparameters()
        self.train_set = self.val_set = self.test_set = None

    def _make(self, n: int, seed: int) -> ReasoningDataset:
        hp = self.hparams
        problems = generate_arithmetic_problems(n, hp.levels, seed, hp.multiple_choice)
        return ReasoningDataset(problems, hp.with_images)

    def setup(self, stage: str | None = None) -> None:
        """Generate (or load) the three splits once."""
        hp = self.hparams
        if self.train_set is None:
            if hp.problems_path:
                self.train_set = ReasoningDataset(load_problems_jsonl(hp.problems_path), hp.with_images)
            else:
                self.train_set = self._make(hp.train_size, hp.seed)
            self.val_set = self._make(hp.val_size, hp.seed + 1)
            self.test_set = self._make(hp.test_size, hp.seed + 2)

    def _loader(self, ds: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        sampler = None if shuffle else evaluation_sampler(ds)  # evaluation under several ranks: each prompt once
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_reasoning,
                          num_workers=self.hparams.num_workers, drop_last=shuffle, sampler=sampler)

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of ``prompts_per_batch`` prompts (the last partial batch dropped)."""
        return self._loader(self.train_set, self.hparams.prompts_per_batch, True)

    def val_dataloader(self) -> DataLoader:
        """Validation prompts in order, ``eval_batch_size`` per batch."""
        return self._loader(self.val_set, self.hparams.eval_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        """Test prompts in order, ``eval_batch_size`` per batch."""
        return self._loader(self.test_set, self.hparams.eval_batch_size, False)


class ColdStartSFTDataset(Dataset):
    """:class:`ColdStartExample` pairs as dicts (the dataclass fields).

    Args:
        examples: the SFT pairs (``build_adaptive_cold_start``).
    """

    def __init__(self, examples: list[ColdStartExample]):
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        return asdict(self.examples[index])


def collate_sft(items: list[dict]) -> dict:
    """Batch SFT pairs: ``prompt`` and ``response`` as lists, ``pass_rate`` as a (B,) float tensor."""
    return {
        "prompt": [it["prompt"] for it in items],
        "response": [it["response"] for it in items],
        "pass_rate": torch.tensor([it["pass_rate"] for it in items], dtype=torch.float32),  # (B,)
    }


class ColdStartSFTDataModule(L.LightningDataModule):
    """SFT pairs built by ``build_adaptive_cold_start`` from the arithmetic task.

    Pass rates come from ``pass_rates_path`` (a JSON list, one per generated train problem, e.g. measured
    with ``estimate_pass_rates``) or, without it, from ``level_pass_rates`` (a prior
    per level 1-5), so the module works without a model.

    Args:
        train_size: generated training problems, an int >= 1.
        val_size: generated validation problems (seed + 1, prior pass rates), an int >= 1.
        levels: difficulty levels of the generated task, a non-empty subset of 1..5.
        level_pass_rates: pass-rate prior for levels 1..5 when no measured rates are given, 5 values in [0, 1].
        pass_rates_path: an existing JSON file with measured pass rates for the train problems.
        batch_size: SFT pairs per batch, an int >= 1.
        seed: generation seed, an int.
        num_workers: DataLoader workers, an int >= 0.
    """

    def __init__(
        self,
        train_size: int = 256,
        val_size: int = 32,
        levels: list[int] = [1, 2, 3, 4, 5],
        level_pass_rates: list[float] = [1.0, 0.75, 0.5, 0.25, 0.0],
        pass_rates_path: str | None = None,
        batch_size: int = 8,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        if len(level_pass_rates) != 5 or any(not 0.0 <= p <= 1.0 for p in level_pass_rates):
            raise ConfigError(f"level_pass_rates must be 5 values in [0, 1] (levels 1-5), got {level_pass_rates}",
                              argument="level_pass_rates")
        check_int("batch_size", batch_size, low=1)
        check_int("train_size", train_size, low=1)
        check_int("val_size", val_size, low=1)
        _check_levels(levels)
        check_int("seed", seed)
        check_int("num_workers", num_workers, low=0)
        if pass_rates_path is not None:
            check_file("pass_rates_path", pass_rates_path)
        self.save_hyperparameters()
        self.train_set = self.val_set = None

    def _examples(self, n: int, seed: int, rates: list[float] | None) -> list[ColdStartExample]:
        hp = self.hparams
        problems = generate_arithmetic_problems(n, hp.levels, seed)
        if rates is None:
            rates = [hp.level_pass_rates[p.level - 1] for p in problems]
        # The templated candidates span terse to verbose on purpose, so the median of all of them is a
        # poor "natural length": L(0) = median longest candidate of the p = 0 problems, L(1) = median
        # shortest candidate of the p = 1 problems (all problems when no rate is exactly 0 or 1).
        lens = [[len(c.split()) for c in solution_candidates(p)] for p in problems]
        hard = [max(x) for x, r in zip(lens, rates) if r == 0.0] or [max(x) for x in lens]
        easy = [min(x) for x, r in zip(lens, rates) if r == 1.0] or [min(x) for x in lens]
        l0, l1 = float(statistics.median(hard)), float(statistics.median(easy))
        return build_adaptive_cold_start(problems, rates, length_at_0=l0, length_at_1=l1)

    def setup(self, stage: str | None = None) -> None:
        """Build the train pairs (measured or prior pass rates) and the val pairs (prior) once."""
        if self.train_set is not None:
            return
        hp = self.hparams
        rates = None
        if hp.pass_rates_path:
            try:
                rates = [float(r) for r in json.loads(Path(hp.pass_rates_path).read_text())]
            except (json.JSONDecodeError, TypeError, ValueError) as err:
                raise ConfigError(f"pass_rates_path must hold a JSON list of numbers, got: {err}",
                                  argument="pass_rates_path") from err
            if len(rates) != hp.train_size:
                raise ConfigError(f"pass_rates_path holds {len(rates)} rates, expected train_size={hp.train_size}",
                                  argument="pass_rates_path")
        self.train_set = ColdStartSFTDataset(self._examples(hp.train_size, hp.seed, rates))
        self.val_set = ColdStartSFTDataset(self._examples(hp.val_size, hp.seed + 1, None))

    def train_dataloader(self) -> DataLoader:
        """Shuffled SFT pairs, ``batch_size`` per batch."""
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True, collate_fn=collate_sft,
                          num_workers=self.hparams.num_workers)

    def val_dataloader(self) -> DataLoader:
        """Validation SFT pairs in order, ``batch_size`` per batch (under several ranks each pair once)."""
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size, shuffle=False, collate_fn=collate_sft,
                          num_workers=self.hparams.num_workers, sampler=evaluation_sampler(self.val_set))
