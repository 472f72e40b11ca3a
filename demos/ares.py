"""ARES demo: enter a problem, sample an answer, see each token coloured by its entropy with the high
window-entropy (HWE) tokens and their windows marked, and the reward the answer would get under AEPO,
broken down in words (the accuracy term, the entropy term, and why the entropy term has its sign).

The default model is SmolLM2-135M-Instruct as released (packaged offline, converted once to safetensors in
the kit's cache, about 30 s the first time: ``make demo-assets`` does it ahead); ``tiny-random-lm`` (random
weights) is offered for a quick look at the wiring and labelled "untrained".

    python demos/ares.py                                  # http://127.0.0.1:7860
    python demos/ares.py --checkpoint-dir runs/ares/ckpts # also offer the LitARES checkpoints in that folder

A visitor picks a checkpoint by file name from the operator's ``--checkpoint-dir`` (a dropdown; the name is
checked again on the server by ``demos._safety.resolve_checkpoint``) and the file is read with
``weights_only=True``; without a directory no checkpoint can be loaded.
"""

from __future__ import annotations

import html
import threading

MODELS = ["smollm2-135m-instruct", "tiny-random-lm"]  # the first is the default
DEFAULT_MODEL = MODELS[0]
MODEL_LABELS = {"smollm2-135m-instruct": "SmolLM2-135M-Instruct (pretrained)",
                "tiny-random-lm": "tiny-random-lm (untrained: random weights)"}
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


def describe_model(model_name: str, checkpoint: str | None = None) -> str:
    """Markdown naming the model, its weights and the data it runs on (the tab shows it above the answer)."""
    if checkpoint:
        return (f"**Model:** the LitARES checkpoint `{checkpoint}` (its own language model).  \n**Weights:** trained "
                f"by the operator's ARES run.  \n**Data:** the problem you type; the reference answer gives the "
                f"accuracy term.")
    if model_name == "tiny-random-lm":
        return ("**untrained** · **Model:** `tiny-random-lm`, a 2-layer, 64-d test model.  \n**Weights:** random "
                "(it writes gibberish: this shows the wiring only).  \n**Data:** the problem you type.")
    return ("**Model:** SmolLM2-135M-Instruct (Hugging Face TB, 135 M parameters, instruction-tuned).  \n"
            "**Weights:** the released checkpoint, packaged with the kit (GGUF, converted once to safetensors in the "
            "kit's cache); not trained with AEPO here: load a LitARES checkpoint for that.  \n"
            "**Data:** the problem you type; the reference answer (optional) gives the accuracy term.")


def explain_reward(correct: float | None, count: float, bucket: str, target: float, alpha: float, reward: float) -> str:
    """The AEPO reward of one answer in words: accuracy term, entropy term and why the entropy term has its
    sign (``vlkit.functional.entropy.hierarchical_entropy_reward``, the ARES paper's table)."""
    from vlkit.functional.entropy import CAP_SCALE, MARGIN_FRACTION, SIGMOID_TEMPERATURE, WRONG_BONUS

    b = BUCKETS.index(bucket)
    accuracy = 0.0 if correct is None else float(correct)
    entropy_term = reward - accuracy
    margin = max(1.0, MARGIN_FRACTION[b] * max(target, 1.0))  # m: the tolerated band around the target
    cap = alpha * CAP_SCALE[b]
    article = "an" if bucket == "easy" else "a"
    above = f"target {target:g} + margin {margin:g} = {target + margin:g}"
    if correct is None:
        acc_text = "no reference answer was given, so the answer counts as wrong"
    elif accuracy > 0.5:
        acc_text = "the answer matches the reference"
    else:
        acc_text = "the answer does not match the reference"
    if cap == 0:
        why = "alpha is 0, so cap = 0 and the entropy term is **zero** whatever n"
    elif accuracy <= 0.5:
        half = f"; n is not above {above}, so σ(0) = ½ gives half of it" if count <= target + margin else ""
        why = (f"a **wrong** answer never loses reward for its entropy: it gets a bonus {WRONG_BONUS[b]:g} × cap × "
               f"σ(max(n − target − m, 0) / {SIGMOID_TEMPERATURE[b]:g}), cap = alpha × {CAP_SCALE[b]:g} = {cap:g}{half}. "
               f"ARES pays a failing answer for exploring: every uncertain fork (HWE token) beyond {above} moves the "
               f"bonus towards its maximum {WRONG_BONUS[b] * cap:.3f}; hence the **positive** sign")
    elif bucket == "hard":
        if count - target >= -margin:
            why = (f"a **correct** answer to a **hard** problem is paid for deliberate reasoning: cap × σ((n − target + m) "
                   f"/ {SIGMOID_TEMPERATURE[b]:g}), cap = alpha × {CAP_SCALE[b]:g} = {cap:g}, since n is at least target − "
                   f"margin = {target - margin:g}; hence the **positive** sign")
        else:
            why = (f"a **correct** answer to a **hard** problem with fewer HWE tokens than target − margin = "
                   f"{target - margin:g} loses reward (half a Huber penalty, at most cap = {cap:g}): too little "
                   f"exploration for a hard problem; hence the **negative** sign")
    elif bucket == "medium":
        outside = abs(count - target) - margin
        if outside <= 0:
            why = (f"a **correct** answer to a **medium** problem is penalised only when n is further than margin "
                   f"{margin:g} from target {target:g}; it is not, so the term is **zero**")
        else:
            why = (f"a **correct** answer to a **medium** problem loses reward when its HWE count misses the target: n "
                   f"is {outside:g} further from target {target:g} than margin {margin:g} allows (a Huber penalty, at "
                   f"most cap = {cap:g}); hence the **negative** sign")
    else:
        if count <= target + margin:
            why = (f"a **correct** answer to an **easy** problem is penalised only for HWE tokens beyond {above}; "
                   f"it has none beyond, so the term is **zero**")
        else:
            why = (f"a **correct** answer to an **easy** problem loses reward for over-thinking: n is "
                   f"{count - target - margin:g} beyond {above} (a Huber penalty, at most cap = {cap:g}); hence the "
                   f"**negative** sign")
    return (f"- **accuracy term {accuracy:.0f}**: {acc_text}.\n"
            f"- **entropy term {entropy_term:+.3f}** ({article} {bucket} problem, n = {count:.0f} HWE tokens): {why}.\n"
            f"- GRPO, for comparison, would reward only the accuracy: {accuracy:.0f}.")


def analyze(problem: str, answer: str, model_name: str, checkpoint: str | None, bucket: str, target: float, alpha: float,
            temperature: float, max_new_tokens: int, seed: int, checkpoint_dir: str | None = None, progress=None):
    """Sample one answer and score it. Returns (token HTML, reward markdown).

    ``checkpoint`` is empty (a fresh ``model_name``) or a file name inside ``checkpoint_dir`` (the operator's
    ``--checkpoint-dir``; None refuses every name). ``progress(fraction, desc=...)`` (the demo's
    ``gr.Progress``) hears about model loading and sampling."""
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
    if progress is not None:
        first = model_name not in _CACHE and not (checkpoint or "").strip()
        progress(0.05, desc=f"loading {MODEL_LABELS[model_name]}" + (" (first call: about 30 s)" if first else ""))
    module = _module(model_name, (checkpoint or "").strip() or None, checkpoint_dir)
    if progress is not None:
        progress(0.5, desc=f"sampling up to {int(max_new_tokens)} tokens")
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
    entropy = token_entropy(roll["logits"], hp.entropy_chunk_size)  # (1, T) the trainer's chunked pass
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
    accuracy = 0.0 if correct is None else float(correct)
    summary = (
        f"**AEPO reward** as {'an' if bucket == 'easy' else 'a'} {bucket} problem (HWE target {target:g}, alpha {alpha:g}): **{reward:+.3f}** = accuracy "
        f"term {accuracy:.0f} + entropy term {reward - accuracy:+.3f} · **HWE tokens** {count:.0f} (window entropy "
        f"above the threshold {tau:.2f} nats, {tau_note})\n\n" + explain_reward(correct, count, bucket, float(target), float(alpha), reward)
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

    def handler(problem, answer, model_name, checkpoint, bucket, target, alpha, temperature, max_new_tokens, seed,
                progress=gr.Progress()):
        """:func:`analyze` with the operator's checkpoint folder bound in (the visitor sends only a name)."""
        return analyze(problem, answer, model_name, checkpoint, bucket, target, alpha, temperature, max_new_tokens,
                       seed, checkpoint_dir=checkpoint_dir, progress=progress)

    def model_info(model_name, checkpoint):
        """The model/weights/data line for the current choice (a client can send any string: checked)."""
        from vlkit.errors import check_choice

        check_choice("model", model_name, MODELS)
        return describe_model(model_name, (checkpoint or "").strip() or None)

    handler.__name__ = "analyze"  # the event's name, as before

    with gr.Blocks(title="ARES: entropy-shaped reasoning rewards") as demo:
        gr.Markdown("# ARES / AEPO\nSample an answer and see where the model is uncertain (token entropy), which "
                    "tokens open a high window-entropy stretch (HWE), and how AEPO would reward it.")
        with gr.Row():
            problem = gr.Textbox(label="problem", value="What is 12 * 7 + 5?", lines=2)
            answer = gr.Textbox(label="reference answer", value="89")
        with gr.Row():
            model = gr.Dropdown([(MODEL_LABELS[m], m) for m in MODELS], value=DEFAULT_MODEL, label="model")
            checkpoint = gr.Dropdown(
                [("none: the model above, as released", "")] + [(n, n) for n in names], value="",
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
        about = gr.Markdown(describe_model(DEFAULT_MODEL))
        run = gr.Button("sample and score", variant="primary")
        tokens = gr.HTML(label="tokens by entropy")
        summary = gr.Markdown(label="reward")
        run.click(handler, [problem, answer, model, checkpoint, bucket, target, alpha, temperature, max_new, seed],
                  [tokens, summary], api_name="analyze")
        model.change(model_info, [model, checkpoint], about)
        checkpoint.change(model_info, [model, checkpoint], about)
    return demo


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="ARES demo (binds 127.0.0.1)")
    parser.add_argument("--checkpoint-dir", default=None, help="folder of LitARES *.ckpt files visitors may load")
    build_demo(parser.parse_args().checkpoint_dir).launch(server_name="127.0.0.1")
