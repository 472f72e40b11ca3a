"""RePRI demo: paint the object on a support image, pick a query, see the mask RePRI finds in the query.

Pick an example (a Fashion-MNIST scene pair whose support mask is filled in for you) or upload your own
support image and paint over the object with the brush. The app shows the query with RePRI's predicted
mask overlaid next to the inductive prototype baseline and, for an example, the query's ground truth with
both predictions' IoU; and RePRI's foreground-proportion estimate (before and after its re-estimation).
Outputs are shown at 384 px (the scenes are 128 px, enlarged pixel by pixel). Runs on the offline
EfficientNet-Lite0 features.

    python demos/repri.py          # http://127.0.0.1:7860
"""

from __future__ import annotations

from vlkit.errors import ConfigError

from functools import lru_cache

import numpy as np

from demos.display import enlarge

__all__ = ["build_demo", "predict", "example", "example_with_truth", "editor_mask", "overlay", "iou"]

IMAGE_SIZE = 256  # model input side; the benchmark's setting (128 px scenes upsampled, Lite0 stride-16 level)
CANVAS_SIZE = 128
DISPLAY_SIZE = 384  # outputs are enlarged to at least this side for display
MODEL_TEXT = ("**Model:** RePRI (Boudiaf et al., CVPR 2021) on frozen EfficientNet-Lite0 features (stride-16 level); "
              "it fits a prototype classifier per episode and trains no weights.  \n**Weights:** EfficientNet-Lite0 "
              "pretrained on ImageNet, packaged offline (no download).  \n**Data:** the offline Fashion-MNIST scenes "
              "(test split, 200 scenes of 128 px), or the images you upload.")


@lru_cache(maxsize=2)
def _model(backbone: str = "lite0-offline"):
    from vlkit.methods.repri import LitRePRI

    out_indices = [3] if backbone == "lite0-offline" else None
    return LitRePRI(backbone=backbone, out_indices=out_indices, variants=["prototype", "repri"], feature_cache=False).eval()


@lru_cache(maxsize=1)
def _pool():
    from vlkit.data.scenes import FashionScenePool

    return FashionScenePool("test", num_scenes=200, canvas_size=CANVAS_SIZE)


def example(class_name: str, index: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A support scene, its mask for ``class_name`` and a query scene holding the same class."""
    support, mask, query, _ = example_with_truth(class_name, index)
    return support, mask, query


def example_with_truth(class_name: str, index: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`example` and the query's ground-truth mask of ``class_name`` (H, W) uint8."""
    from vlkit.data.fashion_mnist import FASHION_MNIST_CLASSNAMES

    if class_name not in FASHION_MNIST_CLASSNAMES:
        raise ConfigError(f"class_name must be one of {FASHION_MNIST_CLASSNAMES}, got {class_name!r}", argument="class_name")
    c = FASHION_MNIST_CLASSNAMES.index(class_name)
    pool = _pool()
    scenes = pool.class_to_indices(128)[c]
    s, q = scenes[(2 * index) % len(scenes)], scenes[(2 * index + 1) % len(scenes)]
    mask = (pool.label(s) == c + 1).astype(np.uint8)
    truth = (pool.label(q) == c + 1).astype(np.uint8)
    return pool.image(s), mask, pool.image(q), truth


def editor_mask(value) -> tuple[np.ndarray, np.ndarray]:
    """(image RGB, mask) from a gr.ImageEditor value: painted pixels of any layer are foreground."""
    if value is None or value.get("background") is None:
        raise ValueError("upload a support image and paint the object on it")
    background = np.asarray(value["background"])
    mask = np.zeros(background.shape[:2], dtype=np.uint8)
    for layer in value.get("layers") or []:
        layer = np.asarray(layer)
        if layer.ndim == 3 and layer.shape[2] == 4 and layer.shape[:2] == mask.shape:
            mask |= (layer[..., 3] > 0).astype(np.uint8)
    return background, mask


def overlay(image: np.ndarray, mask: np.ndarray, colour=(255, 0, 0), alpha: float = 0.5) -> np.ndarray:
    """``image`` (H, W, 3|4) with ``mask`` (H, W) tinted in ``colour``."""
    rgb = np.asarray(image)[..., :3].astype(np.float32)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    out = rgb.copy()
    out[mask.astype(bool)] = (1 - alpha) * rgb[mask.astype(bool)] + alpha * np.asarray(colour, dtype=np.float32)
    return out.clip(0, 255).astype(np.uint8)


def iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two (H, W) masks (1.0 when both are empty)."""
    p, t = prediction.astype(bool), truth.astype(bool)
    union = int((p | t).sum())
    return 1.0 if union == 0 else int((p & t).sum()) / union


def predict(support_image, support_mask, query_image, backbone: str = "lite0-offline") -> dict:
    """RePRI and the prototype baseline on one episode; masks at the query's own size."""
    import torch

    from vlkit.data.episodes import make_episode

    model = _model(backbone)
    batch = make_episode([support_image], [support_mask], query_image, IMAGE_SIZE, model.mean, model.std)
    with torch.no_grad():
        out = model.segment(batch)
    return {
        "repri": model.predictions(out["logits_repri"], batch)[0].numpy(),
        "prototype": model.predictions(out["logits_prototype"], batch)[0].numpy(),
        "proportion_init": float(out["proportion_init"][0]),
        "proportion": float(out["proportion_repri"][0]),
    }


def _run(editor_value, query_image, truth=None):
    """Segment the query; returns the RePRI, prototype and ground-truth images (enlarged) and two texts.

    ``truth``: the query's ground-truth mask when the query came from an example (None: unknown)."""
    from vlkit.report import percent

    image, mask = editor_mask(editor_value)
    if query_image is None:
        raise ConfigError("query_image: pick or upload a query image (got none)", argument="query_image")
    result = predict(image, mask, query_image)
    text = (
        f"Foreground proportion: initial estimate {result['proportion_init']:.3f}, re-estimated "
        f"{result['proportion']:.3f}; predicted mask covers {result['repri'].mean():.3f} of the query."
    )
    if truth is not None and np.asarray(truth).shape == result["repri"].shape:
        truth = np.asarray(truth)
        shown_truth = enlarge(overlay(query_image, truth, (0, 170, 0)), DISPLAY_SIZE)
        truth_text = (f"IoU with the ground truth: RePRI {percent(iou(result['repri'], truth), 1)} %, prototype "
                      f"baseline {percent(iou(result['prototype'], truth), 1)} % (the object covers "
                      f"{percent(float(truth.mean()), 1)} % of the query).")
    else:
        shown_truth, truth_text = None, "Ground truth: unknown for an uploaded query (load an example to see it)."
    return (enlarge(overlay(query_image, result["repri"]), DISPLAY_SIZE),
            enlarge(overlay(query_image, result["prototype"], (0, 90, 255)), DISPLAY_SIZE), shown_truth, text, truth_text)


def _example_to_editor(class_name: str, index: float):
    """The example's support (mask painted in), its query and the query's ground truth (kept server-side)."""
    support, mask, query, truth = example_with_truth(class_name, int(index))
    layer = np.zeros((*mask.shape, 4), dtype=np.uint8)
    layer[mask.astype(bool)] = (255, 0, 0, 160)
    return {"background": support, "layers": [layer], "composite": overlay(support, mask)}, query, truth


def build_demo():
    import gradio as gr

    from demos._safety import guard_image_inputs

    from vlkit.data.fashion_mnist import FASHION_MNIST_CLASSNAMES

    with gr.Blocks(title="RePRI few-shot segmentation") as demo:
        gr.Markdown(
            "# RePRI: few-shot segmentation by transductive inference\n"
            "Paint the object on the **support** image (brush), give a **query** image, press *Segment*. "
            "RePRI fits a prototype classifier to the support mask and to the query's own unlabeled pixels "
            "(Boudiaf et al., CVPR 2021). Or load an example pair from the offline Fashion-MNIST scenes."
        )
        gr.Markdown(MODEL_TEXT)
        truth = gr.State(None)  # the loaded example query's ground-truth mask; None once the query is replaced
        with gr.Row():
            class_name = gr.Dropdown(FASHION_MNIST_CLASSNAMES, value="trouser", label="Example class")
            index = gr.Number(value=0, precision=0, label="Example number")
            load = gr.Button("Load example")
        with gr.Row():
            support = gr.ImageEditor(label="Support image: paint the object", type="numpy", image_mode="RGBA",
                                     brush=gr.Brush(colors=["#ff0000"], default_size=8))  # fmt: skip
            query = gr.Image(label="Query image", type="numpy", image_mode="RGB")
        run = gr.Button("Segment", variant="primary")
        with gr.Row():
            out_repri = gr.Image(label="RePRI (red)", height=DISPLAY_SIZE + 40)
            out_proto = gr.Image(label="Prototype baseline (blue)", height=DISPLAY_SIZE + 40)
            out_truth = gr.Image(label="Ground truth (green)", height=DISPLAY_SIZE + 40)
        info = gr.Markdown()
        truth_info = gr.Markdown()
        load.click(_example_to_editor, [class_name, index], [support, query, truth])
        query.upload(lambda: None, None, truth)  # a visitor's own query: its ground truth is unknown
        query.clear(lambda: None, None, truth)
        run.click(_run, [support, query, truth], [out_repri, out_proto, out_truth, info, truth_info])
    # every uploaded image is decoded and verified (Pillow, pixel limit) before Gradio hands it over
    return guard_image_inputs(demo)


if __name__ == "__main__":
    build_demo().launch(server_name="127.0.0.1")
