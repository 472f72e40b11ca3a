"""Tests of vlkit.data.reasoning: generated task, safe answer checkers, adaptive cold start, DataModules."""

import json
from fractions import Fraction

import pytest
import torch

from vlkit.data.reasoning import (
    ColdStartSFTDataModule,
    ReasoningDataModule,
    ReasoningProblem,
    build_adaptive_cold_start,
    generate_arithmetic_problems,
    load_problems_jsonl,
    solution_candidates,
    target_length,
)
from vlkit.data.verifier import check_answer, extract_boxed, extract_choice_letter, extract_final_number, parse_number


def test_generated_answers_are_correct_and_levels_cycle():
    problems = generate_arithmetic_problems(10, levels=[1, 3, 5], seed=3)
    assert [p.level for p in problems] == [1, 3, 5, 1, 3, 5, 1, 3, 5, 1]
    for p in problems:
        # recompute the answer from the question with an independent tiny parser of "a op b op ..."
        expr = p.question.removeprefix("What is ").rstrip("?")
        tokens = expr.replace("(", " ( ").replace(")", " ) ").split()
        # shunting-free check: the last worked step's right-hand side is the answer
        assert p.steps[-1].split("=")[-1].strip() == p.answer
        assert all(t.isdigit() or t in "+-*()" for t in tokens)
    # seeded: same problems twice, different with another seed
    assert [p.question for p in generate_arithmetic_problems(5, seed=1)] == [p.question for p in generate_arithmetic_problems(5, seed=1)]
    assert generate_arithmetic_problems(5, seed=1)[1].question != generate_arithmetic_problems(5, seed=2)[1].question
    mc = generate_arithmetic_problems(4, seed=0, multiple_choice=True)
    for p in mc:
        assert len(p.choices) == 4 and p.answer in "ABCD"
        assert p.choices["ABCD".index(p.answer)] == p.steps[-1].split("=")[-1].strip()
    with pytest.raises(ValueError, match="levels"):
        generate_arithmetic_problems(3, levels=[0])


def test_checkers_parse_without_evaluating():
    assert extract_boxed(r"so \boxed{\frac{1}{2}} done") == r"\frac{1}{2}"
    assert extract_boxed(r"\boxed{1} then \boxed{2}") == "2"
    assert extract_boxed(r"\boxed{12") is None  # cut off
    assert parse_number("1,234") == 1234
    assert parse_number("-3.50") == Fraction(-7, 2)
    assert parse_number(r"\frac{3}{4}") == Fraction(3, 4)
    assert parse_number("6/0") is None
    assert parse_number("1,2") is None
    # a Python expression is text, not a number: never evaluated
    assert parse_number("__import__('os').system('echo hi')") is None
    assert parse_number("2+3") is None
    assert extract_final_number("First 3, then 4. The answer is 42.") == 42
    assert extract_final_number(r"12 and \boxed{7}") == 7
    assert check_answer(r"\boxed{19}", "19") == 1.0
    assert check_answer("the answer is 19.0", "19") == 1.0
    assert check_answer("the answer is 18", "19") == 0.0
    assert check_answer("no number", "19") == 0.0
    assert extract_choice_letter(r"\boxed{B}") == "B"
    assert extract_choice_letter("I think the answer is (c)") == "C"
    assert check_answer("Answer: D", "D", "choice") == 1.0
    with pytest.raises(ValueError, match="answer_type"):
        check_answer("1", "1", "proof")


def test_problem_validation():
    with pytest.raises(ValueError, match="no answer"):
        ReasoningProblem("What is 1 + 1?", "")
    with pytest.raises(ValueError, match="not a number"):
        ReasoningProblem("What is 1 + 1?", "two")
    p = ReasoningProblem("What is 1 + 1?", "2")
    assert p.prompt.endswith(r"\boxed{}.") and p.prompt_id == ReasoningProblem("What is 1 + 1?", "2").prompt_id


def test_load_jsonl_rejects_missing_answers(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"question": "What is 2 + 2?", "answer": 4}) + "\n" + json.dumps({"question": "Q"}) + "\n")
    with pytest.raises(ValueError, match=":2:"):
        load_problems_jsonl(path)


def test_adaptive_cold_start_length_tracks_pass_rate():
    # L_target(p) = (1 - p) L0 + p L1: L0 = 40, L1 = 10, p = 0.25 -> 32.5
    assert target_length(0.25, 40, 10) == 32.5
    with pytest.raises(ValueError, match="pass_rate"):
        target_length(1.5, 40, 10)
    problems = generate_arithmetic_problems(3, levels=[4], seed=0)
    cands = [["a " * 2, "a " * 10, "a " * 20, "a " * 40] for _ in problems]  # 2, 10, 20, 40 words
    # L0 = median over p=0 problems' candidates (2, 10, 20, 40) = 15; L1 = 15 as well -> give them
    ex = build_adaptive_cold_start(problems, [0.0, 0.5, 1.0], cands, length_at_0=40, length_at_1=2)
    # targets 40, 21, 2 -> nearest candidates 40, 20, 2 words
    assert [len(e.response.split()) for e in ex] == [40, 20, 2]
    assert [e.target_length for e in ex] == [40.0, 21.0, 2.0]
    # defaults: medians at p = 0 and p = 1 -> both 15 (median of 2, 10, 20, 40): ties pick the shorter (10)
    ex = build_adaptive_cold_start(problems, [0.0, 0.5, 1.0], cands)
    assert {len(e.response.split()) for e in ex} == {10}
    with pytest.raises(ValueError, match="pass_rates"):
        build_adaptive_cold_start(problems, [0.0], cands)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        build_adaptive_cold_start(problems, [0.0, 2.0, 1.0], cands)
    with pytest.raises(ValueError, match="length_at_0"):
        build_adaptive_cold_start(problems, [0.5, 0.5, 0.5], cands)
    # the templated candidates are correct solutions
    for p in problems:
        assert all(check_answer(c, p.answer) == 1.0 for c in solution_candidates(p))


def test_reasoning_datamodule_batches():
    dm = ReasoningDataModule(train_size=8, val_size=4, test_size=4, levels=[1, 2], prompts_per_batch=3)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["prompt"]) == 3 and batch["prompt_id"].shape == (3,) and batch["level"].dtype == torch.long
    val = next(iter(dm.val_dataloader()))
    assert set(val["level"].tolist()) <= {1, 2}
    dm_img = ReasoningDataModule(train_size=2, val_size=2, test_size=2, with_images=True, prompts_per_batch=2)
    dm_img.setup("fit")
    b = next(iter(dm_img.train_dataloader()))
    assert b["image"][0].size == (56, 56) and "image" in b["prompt"][0]
    with pytest.raises(ValueError, match="prompts_per_batch"):
        ReasoningDataModule(prompts_per_batch=0)


def test_cold_start_datamodule_longer_responses_for_harder_levels():
    dm = ColdStartSFTDataModule(train_size=10, val_size=5, batch_size=4)
    dm.setup("fit")
    ex = dm.train_set.examples
    by_level = {}
    for e in ex:
        by_level.setdefault(e.level, []).append(len(e.response.split()))
    # prior pass rates 1.0 (level 1) ... 0.0 (level 5): level-5 responses longer than level-1 ones
    assert min(by_level[5]) > max(by_level[1])
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["response"]) == 4 and batch["pass_rate"].shape == (4,)
