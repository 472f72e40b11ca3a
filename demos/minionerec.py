"""MiniOneRec demo: pick a test user (or type a history of titles) and see the top-10 recommendations, with
titles and semantic IDs, from constrained beam search; and inspect the trie's allowed next tokens.

    vlkit demo                                          # the app; this tab: the trained recommender on Amazon Industrial
    python demos/minionerec.py                          # this tab alone, the same default
    python demos/minionerec.py --checkpoint runs/minionerec/amazon18-industrial/sft/fit/version_0/checkpoints/best.ckpt
    python demos/minionerec.py --untrained              # an untrained tiny model on synthetic data, labelled so

By default the tab shows the recommender that ``make demo-assets`` trained once with the kit's own pipeline
on Amazon Industrial (``demos/assets.py``: RQ-VAE semantic IDs, then SFT of the scratch decoder) and keeps
in the kit's cache. When it has not been built yet, the tab says so and offers to build it (about 10
minutes on 2 CPU cores, with a progress bar). The page always states the model, its weights and the data;
an untrained model is shown only when asked for, and labelled "untrained".
"""

from __future__ import annotations

import argparse
import math
import threading

from vlkit.errors import ConfigError

__all__ = ["build_demo", "load_recommender", "load_default_recommender", "describe", "recommend_table", "allowed_next"]

DATASET_NAMES = {"amazon18-industrial": "Amazon 2018 Industrial and Scientific (MiniOneRec's release)",
                 "amazon18-office": "Amazon 2018 Office Products (MiniOneRec's release)",
                 "movielens": "MovieLens latest-small", "synthetic": "the synthetic walk data set (48 items)"}
MAX_USERS = 500  # test users offered in the dropdown


def load_recommender(checkpoint: str | None = None, dataset: str | None = None, checkpoint_dir: str | None = None,
                     sid_path: str | None = None):
    """(module, data): a LitMiniOneRec with weights from ``checkpoint`` (its own data set unless ``dataset``
    is given), or, without a checkpoint, an **untrained** tiny one (random weights, random IDs) on
    ``dataset`` (default: synthetic).

    ``checkpoint`` is the operator's launch argument: a path, or, when ``checkpoint_dir`` is given, a file
    name inside that folder (resolved by ``demos._safety.resolve_checkpoint``). It is read with
    ``weights_only=True`` and must be a LitMiniOneRec (or LitMiniOneRecRL) checkpoint; one written before the
    settings groups (flat ``hidden_size``, ``lr``, ...) is mapped onto them. ``sid_path``: the items' semantic
    IDs, when they are not where the checkpoint's ``sid_path`` says (the demo assets keep them beside it)."""
    from recsys.data.sequences import load_seqrec
    from recsys.methods.minionerec import DecoderSettings, LitMiniOneRec, LitMiniOneRecRL, grouped_hyperparameters
    from vlkit.checkpoints import load_checkpoint
    from vlkit.errors import ConfigError, check_file

    from demos._safety import resolve_checkpoint

    if checkpoint is None:
        data = load_seqrec(dataset or "synthetic")
        levels = max(2, math.ceil(math.log(len(data.item_ids)) / math.log(8)))  # enough 8-code levels for unique IDs
        module = LitMiniOneRec(sid_path=f"random-8x{levels}",
                               decoder=DecoderSettings(hidden_size=32, num_layers=1, num_heads=2))
        module.build(data)
        return module.eval(), data
    if checkpoint_dir is not None:
        path = resolve_checkpoint(checkpoint, checkpoint_dir)
    else:
        path = check_file("checkpoint", checkpoint, suffixes=[".ckpt"])
    ckpt = load_checkpoint(path, (LitMiniOneRec, LitMiniOneRecRL), name=str(checkpoint))
    hparams = grouped_hyperparameters(ckpt.get("hyper_parameters", {}))  # old flat checkpoints too
    hparams["init_checkpoint"] = None
    if sid_path is not None:
        hparams["sid_path"] = str(sid_path)
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


def _percent(value) -> str:
    """A rate in [0, 1] as percent (the kit's formatter, ``vlkit.report``); "-" when unknown."""
    from vlkit.report import percent

    return "-" if value is None else f"{percent(float(value))} %"


def describe(module, data, weights: str, trained: bool) -> str:
    """The markdown the tab opens with: the model, its weights and the data it runs on."""
    decoder = module.decoder_settings
    model = (f"MiniOneRec (`LitMiniOneRec`): a {decoder.num_layers}-layer, {decoder.hidden_size}-d causal decoder "
             f"({'trained from scratch' if decoder.backbone == 'scratch' else decoder.backbone}) that writes an item's "
             f"semantic ID token by token, constrained to the catalogue's IDs by a trie")
    label = "" if trained else "**untrained** · "
    return (f"{label}**Model:** {model}.  \n**Weights:** {weights}.  \n"
            f"**Data:** {DATASET_NAMES.get(data.name, data.name)}: {len(data.item_ids):,} items, "
            f"{len(data.splits['test']):,} test users; semantic IDs of depth {module.sids.num_levels}.")


def load_default_recommender(dataset: str | None = None, assets_dir: str | None = None):
    """(module, data, weights text) of the trained recommender ``make demo-assets`` stored for ``dataset``
    (default: Amazon Industrial), or None when it has not been built."""
    from demos.assets import DEFAULT_MINIONEREC_DATASET, find_minionerec_assets

    found = find_minionerec_assets(dataset or DEFAULT_MINIONEREC_DATASET, assets_dir)
    if found is None:
        return None
    module, data = load_recommender(found["checkpoint"], found["dataset"], sid_path=found["sid_path"])
    val = found.get("validation", {})
    kept = f" (epoch {found['kept_epoch']})" if "kept_epoch" in found else ""
    weights = (f"trained by `make demo-assets` ({found['built']}): {found.get('epochs', '?')} epoch(s) of SFT with "
               f"{', '.join(f'`{c}`' for c in found.get('configs', []))}; kept checkpoint{kept}, {found['steps']:,} "
               f"steps: validation HR@10 {_percent(val.get('val/hr@10'))}, NDCG@10 {_percent(val.get('val/ndcg@10'))} "
               f"on {int(val.get('val/rows', 0)):,} validation rows")
    return module, data, weights


def build_demo(checkpoint: str | None = None, dataset: str | None = None, checkpoint_dir: str | None = None,
               untrained: bool = False, assets_dir: str | None = None, build_epochs: int = 4,
               build_overrides: tuple[str, ...] = ()):
    """The Gradio app (no launch); visitors choose no checkpoint.

    Args:
        checkpoint: the operator's LitMiniOneRec checkpoint (a path, or a file name in ``checkpoint_dir``).
        dataset: the data set (default: the checkpoint's own; else Amazon Industrial, or synthetic when untrained).
        checkpoint_dir: the folder ``checkpoint`` is looked up in.
        untrained: show an untrained tiny model (labelled "untrained") instead of the trained default.
        assets_dir: where the trained default lives (None: ``<cache>/demo-assets``, see ``demos/assets.py``).
        build_epochs / build_overrides: the SFT epochs and extra CLI options of the "build" button, used
            when the trained default is missing.
    """
    import gradio as gr

    from demos.assets import DEFAULT_MINIONEREC_DATASET, build_minionerec_assets

    state: dict = {"module": None, "data": None, "info": "", "users": {}, "user_ids": []}
    lock = threading.Lock()

    def install(module, data, info: str) -> None:
        users = {s.user: s for s in data.splits["test"]}
        state.update(module=module, data=data, info=info, users=users, user_ids=sorted(users)[:MAX_USERS])

    default_dataset = dataset or DEFAULT_MINIONEREC_DATASET
    if checkpoint is not None:
        module, data = load_recommender(checkpoint, dataset, checkpoint_dir)
        install(module, data, describe(module, data, f"the operator's checkpoint `{checkpoint}`", trained=True))
    elif untrained:
        module, data = load_recommender(None, dataset)
        install(module, data, describe(module, data, "random initialisation, random semantic IDs: this shows the "
                                       "wiring, not recommendations", trained=False))
    else:
        loaded = load_default_recommender(default_dataset, assets_dir)
        if loaded is not None:
            install(loaded[0], loaded[1], describe(*loaded, trained=True))
        else:
            state["info"] = (
                f"**The trained recommender for {DATASET_NAMES.get(default_dataset, default_dataset)} is not built "
                f"yet.** Run `make demo-assets` once (about 10 minutes on 2 CPU cores), or press *build the trained "
                f"recommender* below: the same training (semantic IDs, then {build_epochs} SFT epochs), "
                f"with a progress bar; it is kept in the kit's cache for every later launch.")

    def require_model():
        if state["module"] is None:
            raise ConfigError("the trained recommender is not built yet: press 'build the trained recommender' "
                              "(or run `make demo-assets`)", argument="model")
        return state["module"], state["data"]

    def by_user(user: str):
        """The chosen test user's history, the model's top 10 and where the held-out item landed."""
        from vlkit.errors import check_choice

        sample = state["users"][check_choice("user", user, state["user_ids"])]
        module, data = require_model()
        rows = recommend_table(module, data, list(sample.history))
        history = "\n".join(data.title(i) for i in sample.history)
        rank = next((r[0] for r in rows if r[1] == sample.target), None)
        where = f"rank {rank} of the top-10" if rank is not None else "not in the top-10"
        return history, rows, f"held-out next item: **{data.title(sample.target)}** ({where})"

    def by_titles(text: str):
        """The top 10 after a typed history (one catalogue title, or part of one, per line)."""
        try:
            module, data = require_model()
            return recommend_table(module, data, _resolve_titles(text, data)), ""
        except ValueError as err:
            return [], str(err)

    def trie_next(prefix: str) -> str:
        """The trie's allowed next tokens after ``prefix``."""
        return allowed_next(state["module"], prefix) if state["module"] is not None else "(no recommender loaded yet)"

    def build_recommender(progress=gr.Progress()):
        """Build the trained default (first launch without ``make demo-assets``), then show it."""
        with lock:  # one build at a time; a second press waits and then finds it built
            if state["module"] is None:
                progress(0.0, desc="starting")
                build_minionerec_assets(default_dataset, assets_dir, epochs=build_epochs, overrides=build_overrides,
                                        progress=lambda fraction, text: progress(fraction, desc=text))
                loaded = load_default_recommender(default_dataset, assets_dir)
                install(loaded[0], loaded[1], describe(*loaded, trained=True))
        ids = state["user_ids"]
        return state["info"], gr.update(choices=ids, value=ids[0] if ids else None), gr.update(visible=False)

    with gr.Blocks(title="MiniOneRec") as demo:
        gr.Markdown("# MiniOneRec: generative recommendation with semantic IDs")
        info = gr.Markdown(state["info"])
        build = gr.Button("build the trained recommender", visible=state["module"] is None)
        with gr.Row():
            ids = state["user_ids"]
            user = gr.Dropdown(ids, label="test user", value=ids[0] if ids else None)
            titles = gr.Textbox(label="history (one title per line)", lines=6)
        status = gr.Markdown()
        table = gr.Dataframe(headers=["rank", "item", "semantic ID", "title"], label="top-10 (constrained beam search)",
                             wrap=True, column_widths=["6%", "8%", "22%", "64%"])
        with gr.Row():
            run_user = gr.Button("recommend for user")
            run_titles = gr.Button("recommend for typed history")
        prefix = gr.Textbox(label="ID prefix, e.g. <a_3><b_1> (empty = first level)")
        allowed = gr.Textbox(label="trie: allowed next tokens")
        build.click(build_recommender, None, [info, user, build])
        run_user.click(by_user, user, [titles, table, status])
        run_titles.click(by_titles, titles, [table, status])
        prefix.change(trie_next, prefix, allowed)
    return demo


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="MiniOneRec demo (binds 127.0.0.1)")
    parser.add_argument("--checkpoint", default=None, help="a .ckpt path (a file name with --checkpoint-dir)")
    parser.add_argument("--checkpoint-dir", default=None, help="folder that --checkpoint is looked up in")
    parser.add_argument("--dataset", default=None, help="data set (default: the checkpoint's, else amazon18-industrial)")
    parser.add_argument("--untrained", action="store_true", help="an untrained tiny model, labelled so")
    parser.add_argument("--port", type=int, default=7860)
    ns = parser.parse_args()
    build_demo(ns.checkpoint, ns.dataset, ns.checkpoint_dir, untrained=ns.untrained).queue().launch(
        server_name="127.0.0.1", server_port=ns.port)
