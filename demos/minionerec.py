"""MiniOneRec demo: pick a user (or type a history of titles) and see the top-10 recommendations, with
titles and semantic IDs, from constrained beam search; and inspect the trie's allowed next tokens.

    python demos/minionerec.py --checkpoint runs/minionerec/amazon18-industrial/sft/fit/version_0/checkpoints/best.ckpt

Without a checkpoint it runs an untrained tiny model on the synthetic data set (the wiring, not the quality).
"""

from __future__ import annotations

from vlkit.errors import ConfigError

import argparse

__all__ = ["build_demo", "load_recommender"]


def load_recommender(checkpoint: str | None = None, dataset: str | None = None, checkpoint_dir: str | None = None):
    """(module, data): a LitMiniOneRec with weights from ``checkpoint`` (its own data set unless ``dataset``
    is given), or an untrained tiny one on synthetic data.

    ``checkpoint`` is the operator's launch argument: a path, or, when ``checkpoint_dir`` is given, a file
    name inside that folder (resolved by ``demos._safety.resolve_checkpoint``). It is read with
    ``weights_only=True`` and must be a LitMiniOneRec (or LitMiniOneRecRL) checkpoint; one written before the
    settings groups (flat ``hidden_size``, ``lr``, ...) is mapped onto them."""
    from recsys.data.sequences import load_seqrec
    from recsys.methods.minionerec import DecoderSettings, LitMiniOneRec, LitMiniOneRecRL, grouped_hyperparameters
    from vlkit.checkpoints import load_checkpoint
    from vlkit.errors import ConfigError, check_file

    from demos._safety import resolve_checkpoint

    if checkpoint is None:
        data = load_seqrec(dataset or "synthetic")
        module = LitMiniOneRec(sid_path="random-8x2", decoder=DecoderSettings(hidden_size=32, num_layers=1, num_heads=2))
        module.build(data)
        return module.eval(), data
    if checkpoint_dir is not None:
        path = resolve_checkpoint(checkpoint, checkpoint_dir)
    else:
        path = check_file("checkpoint", checkpoint, suffixes=[".ckpt"])
    ckpt = load_checkpoint(path, (LitMiniOneRec, LitMiniOneRecRL), name=str(checkpoint))
    hparams = grouped_hyperparameters(ckpt.get("hyper_parameters", {}))  # old flat checkpoints too
    hparams["init_checkpoint"] = None
    allowed = LitMiniOneRec.__init__.__code__.co_varnames
    module = LitMiniOneRec(**{k: v for k, v in hparams.items() if k in allowed})
    data_hp = ckpt.get("datamodule_hyper_parameters", {})
    data = load_seqrec(dataset or data_hp.get("dataset", "synthetic"), root=data_hp.get("root"))
    module.build(data)
    own = module.state_dict()
    state = ckpt["state_dict"]
    bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise ConfigError(f"checkpoint {str(checkpoint)!r} does not match this model's ID vocabulary/shape: {bad[:3]}",
                          argument="checkpoint")
    missing, _ = module.load_state_dict(state, strict=False)
    if missing:
        raise ConfigError(f"checkpoint {str(checkpoint)!r} lacks weights {missing[:3]}", argument="checkpoint")
    return module.eval(), data


def _resolve_titles(text: str, data) -> list[str]:
    by_title = {data.title(i).lower(): i for i in data.item_ids}
    history = []
    for line in [l.strip() for l in text.splitlines() if l.strip()]:
        item = by_title.get(line.lower()) or next((i for t, i in by_title.items() if line.lower() in t), None)
        if item is None:
            raise ConfigError(f"history: unknown item title {line!r}: no catalogue title contains it", argument="history")
        history.append(item)
    if not history:
        raise ConfigError("history: the history is empty: give at least one title", argument="history")
    return history


def recommend_table(module, data, history: list[str], k: int = 10) -> list[list]:
    prompt = module.recommendation_prompt(history)
    items = module.recommend([prompt], max(k, 1))[0].tolist()
    rows = []
    for rank, index in enumerate(i for i in items if i >= 0):
        item = data.item_ids[index]
        rows.append([rank + 1, item, module.sids.sid_string(index), data.title(item)])
    return rows[:k]


def allowed_next(module, prefix: str) -> str:
    """The tokens the trie allows after an ID prefix such as ``<a_3><b_1>`` (empty = the first level)."""
    import re

    import torch

    tokens = re.findall(r"<[a-h]_\d+>", prefix)
    ids = torch.tensor([module.tokenizer.convert_tokens_to_ids(tokens)], dtype=torch.long).reshape(1, len(tokens))
    mask = module.trie.allowed_token_mask(ids)[0]
    allowed = mask.nonzero().flatten().tolist()
    if not allowed:
        return "(nothing: this prefix is not part of any item's ID)"
    if allowed == [module.tokenizer.eos_token_id]:
        return "(complete ID: only end-of-sequence)"
    names = module.tokenizer.convert_ids_to_tokens(allowed)
    return f"{len(names)} allowed: " + " ".join(names)


def build_demo(checkpoint: str | None = None, dataset: str | None = None, checkpoint_dir: str | None = None):
    """The Gradio app (no launch) around :func:`load_recommender`'s model; visitors choose no checkpoint."""
    import gradio as gr

    module, data = load_recommender(checkpoint, dataset, checkpoint_dir)
    users = {s.user: s for s in data.splits["test"]}
    user_ids = sorted(users)[:500]

    def by_user(user: str):
        """The chosen test user's history, the model's top 10 and the held-out item."""
        from vlkit.errors import check_choice

        sample = users[check_choice("user", user, user_ids)]
        history = "\n".join(data.title(i) for i in sample.history)
        return history, recommend_table(module, data, list(sample.history)), f"held-out next item: {data.title(sample.target)}"

    def by_titles(text: str):
        try:
            return recommend_table(module, data, _resolve_titles(text, data)), ""
        except ValueError as err:
            return [], str(err)

    with gr.Blocks(title="MiniOneRec") as demo:
        gr.Markdown(f"# MiniOneRec: generative recommendation with semantic IDs\nData: `{data.name}`, "
                    f"{len(data.item_ids)} items, IDs of depth {module.sids.num_levels}.")
        with gr.Row():
            user = gr.Dropdown(user_ids, label="test user", value=user_ids[0] if user_ids else None)
            titles = gr.Textbox(label="history (one title per line)", lines=6)
        status = gr.Markdown()
        table = gr.Dataframe(headers=["rank", "item", "semantic ID", "title"], label="top-10 (constrained beam search)")
        with gr.Row():
            run_user = gr.Button("recommend for user")
            run_titles = gr.Button("recommend for typed history")
        prefix = gr.Textbox(label="ID prefix, e.g. <a_3><b_1> (empty = first level)")
        allowed = gr.Textbox(label="trie: allowed next tokens")
        run_user.click(by_user, user, [titles, table, status])
        run_titles.click(by_titles, titles, [table, status])
        prefix.change(lambda p: allowed_next(module, p), prefix, allowed)
    return demo


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="MiniOneRec demo")
    parser.add_argument("--checkpoint", default=None, help="a .ckpt path (a file name with --checkpoint-dir)")
    parser.add_argument("--checkpoint-dir", default=None, help="folder that --checkpoint is looked up in")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--port", type=int, default=7860)
    ns = parser.parse_args()
    build_demo(ns.checkpoint, ns.dataset, ns.checkpoint_dir).launch(server_name="127.0.0.1", server_port=ns.port)
