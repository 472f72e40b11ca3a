"""ARES demo: enter a problem, sample an answer, see each token coloured by its entropy with the high
window-entropy (HWE) tokens and their windows marked, and the reward the answer would get under AEPO.

    python demos/ares.py                                  # http://127.0.0.1:7860
    python demos/ares.py --checkpoint-dir runs/ares/ckpts # also offer the LitARES checkpoints in that folder

A visitor picks a checkpoint by file name from the operator's ``--checkpoint-dir`` (a dropdown; the name is
checked again on the server by ``demos._safety.resolve_checkpoint``) and the file is read with
``weights_only=True``; without a directory no checkpoint can be loaded.
"""

from __future__ import annotations

import html
import threading

MODELS = ["tiny-random-lm", "smollm2-135m-instruct"]
BUCKETS = ["easy", "medium", "hard"]
_CACHE: dict[str, object] = {}
_SAMPLING_LOCK = threading.Lock()


def _module(model_name: str, checkpoint: str | None, checkpoint_dir: str | None = None):
    """The policy to sample from: a fresh ``model_name`` or the LitARES checkpoint named ``checkpoint`` in
    ``checkpoint_dir`` (one model kept in memory)."""
    from vlkit.checkpoints import load_checkpoint
    from vlkit.methods.ares import LitARES
    from vlkit.models.language import LanguageModelSettings

    from demos._safety import resolve_checkpoint

    path = resolve_checkpoint(checkpoint, checkpoint_dir) if checkpoint else None
    key = f"{path}@{path.stat().st_mtime_ns}" if path is not None else model_name  # a rewritten file reloads
    if key not in _CACHE:
        if path is not None:
            # weights_only=True; refuses another class's checkpoint with a message naming both classes
            load_checkpoint(path, LitARES, name=checkpoint)
            module = LitARES.load_from_checkpoint(path, map_location="cpu", weights_only=True)
        else:
            module = LitARES(LanguageModelSettings(model_name=model_name, lora_r=0), kl_coef=0.0, group_size=2)
        _CACHE.clear()  # keep one model in memory
        _CACHE[key] = module.eval()
    return _CACHE[key]


def _colour(value: float, top: float) -> str:
    """White (low entropy) to orange-red (high), as an rgb() string."""
    x = max(0.0, min(1.0, value / max(top, 1e-6)))
    return f"rgb(255,{int(255 - 150 * x)},{int(255 - 230 * x)})"


def render_tokens(pieces: list[str], entropy: list[float], hwe: list[bool], window: int, include_current: bool) -> str:
    """HTML: one span per token, background by entropy, HWE tokens boxed and their windows underlined."""
    top = max(entropy) if entropy else 1.0
    in_window = [False] * len(pieces)
    for i, flag in enumerate(hwe):
        if flag:
            start = i if include_current else i + 1
            for j in range(start, min(len(pieces), start + window)):
                in_window[j] = True
    spans = []
    for piece, h, is_hwe, win in zip(pieces, entropy, hwe, in_window):
        style = f"background:{_colour(h, top)};"
        if is_hwe:
            style += "outline:2px solid #c00;font-weight:bold;"
        if win:
            style += "border-bottom:3px solid #06c;"
        text = html.escape(piece).replace("\n", "&#8629;<br>")
        spans.append(f'<span title="H={h:.2f} nats" style="{style}">{text}</span>')
    legend = ("<p style='font-size:0.85em'>background: token entropy (white = 0, red = max of this answer) · "
              "<b style='outline:2px solid #c00'>boxed</b>: HWE token · "
              "<span style='border-bottom:3px solid #06c'>underlined</span>: its entropy window</p>")
    return legend + "<div style='font-family:monospace;line-height:1.9'>" + "".join(spans) + "</div>"


def analyze(problem: str, answer: str, model_name: str, checkpoint: str | None, bucket: str, target: float, alpha: float,
            temperature: float, max_new_tokens: int, seed: int, checkpoint_dir: str | None = None):
    """Sample one answer and score it. Returns (token HTML, reward markdown).

    ``checkpoint`` is empty (a fresh ``model_name``) or a file name inside ``checkpoint_dir`` (the operator's
    ``--checkpoint-dir``; None refuses every name)."""
    import torch

    from vlkit.data.reasoning import ANSWER_INSTRUCTION
    from vlkit.data.verifier import check_answer, parse_number
    from vlkit.errors import ConfigError, check_choice, check_number, check_whole_number
    from vlkit.functional.aepo import shaped_rewards
    from vlkit.functional.entropy import (
        hwe_token_mask,
        response_entropy_threshold,
        token_entropy,
        window_entropy,
    )

    if not problem or not problem.strip():
        raise ConfigError("problem must be a non-empty question, got an empty text", argument="problem")
    if bucket not in BUCKETS:
        raise ConfigError(f"bucket must be one of {BUCKETS}, got {bucket!r}", argument="bucket")
    check_choice("model", model_name, MODELS)  # a client can send any string: never a path or a hub id
    check_number("target", target, low=0)  # an HWE count target: tokens per answer
    check_number("alpha", alpha, low=0)
    check_number("temperature", temperature, low=0, low_open=True, high=10)
    check_whole_number("max_new_tokens", max_new_tokens, low=1, high=1024)
    check_whole_number("seed", seed, low=0)
    module = _module(model_name, (checkpoint or "").strip() or None, checkpoint_dir)
    hp = module.hparams
    prompt = problem.strip()
    if "\\boxed" not in prompt:
        prompt = f"{prompt} {ANSWER_INSTRUCTION}"
    # sampling reads the global RNG: seed it inside a forked RNG under a lock, so concurrent requests
    # neither interleave their draws nor change each other's answers (same seed -> same answer)
    with _SAMPLING_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        roll = module.generate([prompt], group_size=1, temperature=float(temperature), max_new_tokens=int(max_new_tokens))
    mask = roll["completion_mask"]  # (1, T)
    ids = roll["completion_ids"][0][mask[0].bool()].tolist()
    entropy = token_entropy(roll["logits"])  # (1, T)
    win = window_entropy(entropy, mask, hp.entropy_window, hp.window_includes_current)  # (1, T)
    tau = float(module.hwe_threshold)
    tau_note = "the checkpoint's running threshold"
    if tau < 0:  # no training yet: this answer's own 95th percentile
        tau = float(response_entropy_threshold(win, mask, hp.threshold_quantile)[0])
        tau_note = "this answer's own 95th percentile (no trained threshold)"
    hwe = hwe_token_mask(win, mask, tau, roll["completion_ids"], module.trigger_ids())[0]  # (T,)
    n = len(ids)
    tok = module.bundle.tokenizer
    pieces = [tok.decode([i], skip_special_tokens=False) for i in ids]
    text = tok.decode(ids, skip_special_tokens=True)
    correct = None
    if answer and answer.strip():
        kind = "number" if parse_number(answer) is not None else "choice"
        correct = check_answer(text, answer.strip(), kind)
    b = BUCKETS.index(bucket)
    count = float(hwe[:n].sum())
    targets = torch.zeros(3)
    targets[b] = float(target)
    reward = shaped_rewards(
        torch.tensor([correct if correct is not None else 0.0]), torch.tensor([count]), targets,
        torch.tensor([b]), torch.full((3,), float(alpha)),
    ).item()
    html_tokens = render_tokens(pieces, entropy[0, :n].tolist(), hwe[:n].tolist(), hp.entropy_window, hp.window_includes_current)
    acc = "unknown (no reference answer given)" if correct is None else f"{correct:.0f}"
    summary = (
        f"**accuracy reward** {acc} · **HWE tokens** {count:.0f} (threshold {tau:.2f} nats, {tau_note}) · "
        f"**AEPO reward** as a {bucket} problem with target {target:g}, alpha {alpha:g}: **{reward:+.3f}** "
        f"(accuracy + entropy term {reward - (correct or 0.0):+.3f}) · GRPO reward: {correct if correct is not None else '-'}"
    )
    return html_tokens, summary


def build_demo(checkpoint_dir: str | None = None):
    """The Gradio app (no launch). ``checkpoint_dir``: the folder whose ``*.ckpt`` files visitors may load
    (None: the checkpoint box is disabled and the server refuses every name)."""
    import gradio as gr

    from vlkit.errors import check_dir

    from demos._safety import checkpoint_choices

    if checkpoint_dir is not None:
        checkpoint_dir = str(check_dir("checkpoint_dir", checkpoint_dir).resolve())
    names = checkpoint_choices(checkpoint_dir)

    def handler(problem, answer, model_name, checkpoint, bucket, target, alpha, temperature, max_new_tokens, seed):
        """:func:`analyze` with the operator's checkpoint folder bound in (the visitor sends only a name)."""
        return analyze(problem, answer, model_name, checkpoint, bucket, target, alpha, temperature, max_new_tokens,
                       seed, checkpoint_dir=checkpoint_dir)

    handler.__name__ = "analyze"  # the event's name, as before

    with gr.Blocks(title="ARES: entropy-shaped reasoning rewards") as demo:
        gr.Markdown("# ARES / AEPO\nSample an answer and see where the model is uncertain (token entropy), which "
                    "tokens open a high window-entropy stretch (HWE), and how AEPO would reward it.")
        with gr.Row():
            problem = gr.Textbox(label="problem", value="What is 12 * 7 + 5?", lines=2)
            answer = gr.Textbox(label="reference answer", value="89")
        with gr.Row():
            model = gr.Dropdown(MODELS, value=MODELS[0], label="model")
            checkpoint = gr.Dropdown(
                [("none: the model above, untrained", "")] + [(n, n) for n in names], value="",
                label="LitARES checkpoint", interactive=checkpoint_dir is not None,
                info=(f"{len(names)} *.ckpt file(s) in the --checkpoint-dir folder" if checkpoint_dir is not None
                      else "start the app with --checkpoint-dir DIR to offer the checkpoints in DIR"),
            )
            bucket = gr.Dropdown(BUCKETS, value="medium", label="difficulty bucket")
        with gr.Row():
            target = gr.Number(label="HWE target", value=2)
            alpha = gr.Slider(0.0, 2.0, value=0.5, step=0.05, label="alpha")
            temperature = gr.Slider(0.1, 1.5, value=1.0, step=0.05, label="temperature")
            max_new = gr.Slider(8, 512, value=96, step=8, label="max new tokens")
            seed = gr.Number(label="seed", value=0, precision=0)
        run = gr.Button("sample and score", variant="primary")
        tokens = gr.HTML(label="tokens by entropy")
        summary = gr.Markdown(label="reward")
        run.click(handler, [problem, answer, model, checkpoint, bucket, target, alpha, temperature, max_new, seed],
                  [tokens, summary], api_name="analyze")
    return demo


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="ARES demo (binds 127.0.0.1)")
    parser.add_argument("--checkpoint-dir", default=None, help="folder of LitARES *.ckpt files visitors may load")
    build_demo(parser.parse_args().checkpoint_dir).launch(server_name="127.0.0.1")
