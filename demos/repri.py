"""RePRI demo: paint the object on a support image, pick a query, see the mask RePRI finds in the query.

Pick an example (a Fashion-MNIST scene pair whose support mask is filled in for you) or upload your own
support image and paint over the object with the brush. The app shows the query with RePRI's predicted
mask overlaid next to the inductive prototype baseline, and RePRI's foreground-proportion estimate
(before and after its re-estimation). Runs on the offline EfficientNet-Lite0 features.

    python demos/repri.py          # http://127.0.0.1:7860
"""

from __future__ import annotations

from vlkit.errors import ConfigError

from functools import lru_cache

import numpy as np

__all__ = ["build_demo", "predict", "example", "editor_mask", "overlay"]

IMAGE_SIZE = 256  # model input side; the benchmark's setting (128 px scenes upsampled, Lite0 stride-16 level)
CANVAS_SIZE = 128


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
    from vlkit.data.fashion_mnist import FASHION_MNIST_CLASSNAMES

    if class_name not in FASHION_MNIST_CLASSNAMES:
        raise ConfigError(f"class_name must be one of {FASHION_MNIST_CLASSNAMES}, got {class_name!r}", argument="class_name")
    c = FASHION_MNIST_CLASSNAMES.index(class_name)
    pool = _pool()
    scenes = pool.class_to_indices(128)[c]
    s, q = scenes[(2 * index) % len(scenes)], scenes[(2 * index + 1) % len(scenes)]
    mask = (pool.label(s) == c + 1).astype(np.uint8)
    return pool.image(s), mask, pool.image(q)


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


def _run(editor_value, query_image):
    image, mask = editor_mask(editor_value)
    if query_image is None:
        raise ConfigError("query_image: pick or upload a query image (got none)", argument="query_image")
    result = predict(image, mask, query_image)
    text = (
        f"Foreground proportion: initial estimate {result['proportion_init']:.3f}, re-estimated "
        f"{result['proportion']:.3f}; predicted mask covers {result['repri'].mean():.3f} of the query."
    )
    return overlay(query_image, result["repri"]), overlay(query_image, result["prototype"], (0, 90, 255)), text


def _example_to_editor(class_name: str, index: float):
    support, mask, query = example(class_name, int(index))
    layer = np.zeros((*mask.shape, 4), dtype=np.uint8)
    layer[mask.astype(bool)] = (255, 0, 0, 160)
    return {"background": support, "layers": [layer], "composite": overlay(support, mask)}, query


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
            out_repri = gr.Image(label="RePRI (red)")
            out_proto = gr.Image(label="Prototype baseline (blue)")
        info = gr.Markdown()
        load.click(_example_to_editor, [class_name, index], [support, query])
        run.click(_run, [support, query], [out_repri, out_proto, info])
    # every uploaded image is decoded and verified (Pillow, pixel limit) before Gradio hands it over
    return guard_image_inputs(demo)


if __name__ == "__main__":
    build_demo().launch(server_name="127.0.0.1")
