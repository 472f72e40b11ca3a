"""ARES evaluation under Lightning's DDP on 2 CPU processes (gloo): accuracy, completion length and HWE count,
overall and per generator level, are those of 1 process on the same weights and 5 prompts (greedy decoding,
one prompt per batch), each prompt scored once (padding would make 6); a rollout step under DDP moves the
LoRA adapters only, as on 1 process. (The controller's agreement across ranks: tests/vlkit/methods/test_ares_ddp.py.)"""

from __future__ import annotations


def test_ares_eval_metrics_per_level_do_not_change_under_two_ranks(ddp, tmp_path):
    two = ddp.run("ares", tmp_path / "two", 2, save=str(tmp_path / "two.ckpt"))
    one = ddp.run("ares", tmp_path / "one", 1, test_ckpt=str(tmp_path / "two.ckpt"))[0]
    assert two[0]["metrics"] == two[1]["metrics"]
    assert one["metrics"]["test/rows"] == two[0]["metrics"]["test/rows"] == 5
    ddp.assert_same_metrics(one["metrics"], two[0]["metrics"], "test/", atol=1e-6)
    assert {"test/acc_level1", "test/acc_level2", "test/length_level1", "test/length_level2"} <= set(one["metrics"])
    assert one["metrics"]["test/length"] > 0
    # the policy loss is a mean over each rank's own tokens, so the weights differ from 1 process's; the
    # parameters that move are the same: every LoRA adapter, no base weight
    assert one["moved"] == two[0]["moved"] == two[1]["moved"]
    assert one["moved"] and all(".lora_" in name for name in one["moved"])
