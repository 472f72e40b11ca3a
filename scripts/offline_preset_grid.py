"""Reproduce the choice of the offline preset's alignment settings on Fashion-MNIST *train* images.

Run: .venv/bin/python scripts/offline_preset_grid.py [--n 1000]
Prints zero-shot accuracy for each (template set, ridge lambda); never touches the test split.
"""

import argparse

import torch
import torch.nn.functional as F
from open_clip import IMAGENET_CLASSNAMES

from vlkit.cache import cache_root
from vlkit.data.fashion_mnist import FASHION_MNIST_CLASSNAMES, FashionMNIST
from vlkit.data.features import encode_dataset
from vlkit.data.fewshot import sample_subset
from vlkit.functional.ridge import ridge_fit
from vlkit.models.backbones import create_backbone
from vlkit.models.pretrained import load_efficientnet_lite0

TEMPLATE_SETS = {
    "1": ["a photo of a {}."],
    "7": [
        "a photo of a {}.",
        "a bad photo of a {}.",
        "a photo of the large {}.",
        "a photo of the small {}.",
        "a close-up photo of a {}.",
        "a bright photo of a {}.",
        "a black and white photo of the {}.",
    ],
}


def main() -> None:
    """Print the train zero-shot accuracy of every (template set, ridge lambda) of the offline preset."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    bb = create_backbone("offline-lite0-minilm")
    train = torch.utils.data.Subset(FashionMNIST("train"), sample_subset(60000, args.n, 0).tolist())
    feats, labels = encode_dataset(bb, train, cache_dir=cache_root())
    rows = F.normalize(load_efficientnet_lite0().classifier.weight.detach(), dim=-1)  # (1000, 1280)
    text = bb.text_tower
    for name, templates in TEMPLATE_SETS.items():
        def embed(names):
            e = text([t.format(n) for n in names for t in templates]).view(len(names), len(templates), -1)
            return F.normalize(e.mean(1), dim=-1)

        source, classes = embed(IMAGENET_CLASSNAMES), embed(FASHION_MNIST_CLASSNAMES)
        for lam in (0.01, 0.1, 1.0):
            w = F.normalize(classes @ ridge_fit(source, rows, lam), dim=-1)
            acc = float(((feats @ w.T).argmax(-1) == labels).float().mean())
            print(f"templates={name} lambda={lam}: train zero-shot accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
