"""The answer verifier: reads a completion's final answer and checks it against the reference answer.

This is the verifiable reward of RL on reasoning (ARES' accuracy reward, ``LitARES``'s rollouts and the
demo score completions with :func:`check_answer`). Model output is parsed, never executed or passed to
``eval``:

- ``extract_boxed``: the last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces;
- ``parse_number``: integers, decimals, fractions ``a/b`` and ``\\frac{a}{b}``, thousands separators, as an
  exact ``fractions.Fraction``;
- ``extract_final_number``: the boxed answer, else the last number;
- ``extract_choice_letter``: the chosen option letter;
- ``check_answer`` -> 1.0 / 0.0.

Why in ``data/``: the verifier judges text against a data set's reference answers, holds no weights and no
tensors (so not ``models/``, and ``functional/`` is tensors only), and the problem generator of
``vlkit.data.reasoning`` uses it to validate the answers it writes; ``data/`` may not import ``models/``, so
a verifier there could not be used here. Methods and demos import it as their reward.
"""

from __future__ import annotations

import re
from fractions import Fraction

from vlkit.errors import ConfigError

__all__ = [
    "ANSWER_TYPES",
    "check_answer",
    "extract_boxed",
    "extract_choice_letter",
    "extract_final_number",
    "parse_number",
]

ANSWER_TYPES = ("number", "choice")
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|[-+]?\.\d+")


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), with nested braces balanced; None if absent."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, out = 1, []
    while i < len(text):
        ch = text[i]
        depth += ch == "{"
        depth -= ch == "}"
        if depth == 0:
            return "".join(out).strip()
        out.append(ch)
        i += 1
    return None  # unbalanced: the answer was cut off


def parse_number(text: str) -> Fraction | None:
    """A number written as an integer, decimal, fraction ``a/b``, ``\\frac{a}{b}`` or with thousands
    separators, as an exact ``Fraction``; None when ``text`` holds no single number. Never evaluates."""
    if text is None:
        return None
    s = str(text).strip().strip("$").replace("\\!", "").replace("{,}", "")
    s = re.sub(r"\\(?:d|t)?frac\{([^{}]+)\}\{([^{}]+)\}", r"\1/\2", s)
    s = re.sub(r"\\text\{[^{}]*\}", "", s).strip().rstrip(".")
    m = re.fullmatch(r"([-+]?)\s*(\d[\d,]*(?:\.\d+)?|\.\d+)(?:\s*/\s*(\d+))?", s)
    if m is None:
        return None
    sign, body, denom = m.groups()
    if "," in body and not re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", body):
        return None  # "1,2" is not a number in any notation we accept
    try:
        value = Fraction(body.replace(",", ""))
        if denom is not None:
            if int(denom) == 0:
                return None
            value /= int(denom)
    except (ValueError, ZeroDivisionError):
        return None
    return -value if sign == "-" else value


def extract_final_number(text: str) -> Fraction | None:
    """The boxed answer if there is one, else the last number in the text."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return parse_number(boxed)
    found = _NUMBER.findall(text)
    for candidate in reversed(found):
        value = parse_number(candidate.rstrip(","))
        if value is not None:
            return value
    return None


def extract_choice_letter(text: str, n_choices: int = 4) -> str | None:
    """The chosen option letter: boxed content, else "answer is X" / "(X)", else the last standalone letter."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    letters = "".join(chr(65 + i) for i in range(n_choices))
    boxed = extract_boxed(text)
    if boxed is not None:
        m = re.search(rf"\b([{letters}])\b", boxed.replace("\\text{", " ").upper())
        return m.group(1) if m else None
    m = re.findall(rf"answer\s*(?:is|:)?\s*\(?([{letters}])\b", text, flags=re.IGNORECASE)
    if m:
        return m[-1].upper()
    m = re.findall(rf"(?<![A-Za-z])\(?([{letters}])[).:]?(?![A-Za-z])", text)
    return m[-1] if m else None


def check_answer(response: str, answer: str, answer_type: str = "number") -> float:
    """Verifiable accuracy reward: 1.0 if the response's final answer equals ``answer``, else 0.0."""
    if answer_type == "number":
        expected = parse_number(answer)
        if expected is None:
            raise ConfigError(f"answer must be a number for answer_type='number', got {answer!r}", argument="answer")
        got = extract_final_number(response)
        return float(got is not None and got == expected)
    if answer_type == "choice":
        return float(extract_choice_letter(response) == str(answer).strip().upper())
    raise ConfigError(f"answer_type must be one of {ANSWER_TYPES}, got {answer_type!r}", argument="answer_type")
