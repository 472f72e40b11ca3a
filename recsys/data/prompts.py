"""MiniOneRec's prompts: the one template and the six SFT task families, as (prompt, response) strings.

One template serves SFT, RL and evaluation (the authors use three slightly different ones). A task shows
one field of a sample (the history's IDs or titles, or the target's ID or title) and asks for another;
``sid_of`` / ``title_of`` turn an item id into its semantic-ID string / title, so this module needs no
tokenizer and no model. Tokenising the strings is the method's job (``recsys.models.tokenizers``).
"""

from __future__ import annotations

from typing import Callable

from vlkit.errors import ConfigError, check_choice

__all__ = ["PROMPT_TEMPLATE", "TASKS", "ITEM_TASKS", "build_example", "prompt_vocabulary_texts"]

# One prompt template for SFT, RL and evaluation (the authors use three different ones).
PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n### Input:\n{input}\n### Response:\n"

# task -> (instruction, what the input shows, what the response is)
TASKS: dict[str, tuple[str, str, str]] = {
    "sid_seq": ("Predict the ID of the next item.", "history_sids", "target_sid"),
    "sid2title": ("Give the title of this item.", "target_sid", "target_title"),
    "title2sid": ("Give the ID of this item.", "target_title", "target_sid"),
    "sid_seq2title": ("Predict the title of the next item.", "history_sids", "target_title"),
    "title_seq2title": ("Predict the title of the next item.", "history_titles", "target_title"),
    "title_seq2sid": ("Predict the ID of the next item.", "history_titles", "target_sid"),
}

# tasks about one item (its ID <-> its title): one example per catalogue item, not per training sample
ITEM_TASKS = ("sid2title", "title2sid")


def build_example(task: str, history: list[str], target: str, sid_of: Callable[[str], str],
                  title_of: Callable[[str], str]) -> tuple[str, str]:
    """(prompt, response) for one task; ``sid_of``/``title_of`` map an item id to its ID string / title."""
    check_choice("task", task, sorted(TASKS))
    if not history and TASKS[task][1].startswith("history"):
        raise ConfigError(f"history must hold at least one item for task {task!r}, got []", argument="history")
    instruction, shown, answer = TASKS[task]
    fields = {
        "history_sids": lambda: " ".join(sid_of(i) for i in history),
        "history_titles": lambda: "; ".join(title_of(i) for i in history),
        "target_sid": lambda: sid_of(target),
        "target_title": lambda: title_of(target),
    }
    return PROMPT_TEMPLATE.format(instruction=instruction, input=fields[shown]()), fields[answer]()


def prompt_vocabulary_texts(titles: list[str]) -> list[str]:
    """The texts a word-level vocabulary is counted on: the items' titles and every task's empty prompt
    (so that the template's and the instructions' words get tokens)."""
    return list(titles) + [PROMPT_TEMPLATE.format(instruction=t[0], input="") for t in TASKS.values()]
