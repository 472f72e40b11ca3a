"""The CLIP text tower cut after each batch's last end-of-text token gives ``model.encode_text``'s features,
in the input order, and every tower it cannot handle keeps ``model.encode_text``."""

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from vlkit.models.backbones import _TINY_CLIP_CFG, OpenClipEncoder, create_backbone  # noqa: E402
from vlkit.models.clip_text import cuts_at_eot  # noqa: E402

# EOT positions under CLIP's tokenizer (start token at 0): "x" 2, "a b c d" 5, "a photo of a dog." 7 (a, photo,
# of, a, dog, "."), "cat" 2; the long row is truncated, its EOT at context - 1
TEXTS = ["a photo of a dog.", "x", "word " * 90, "a b c d", "cat"]


def _tiny_clip(seed: int = 0, **text_overrides) -> open_clip.CLIP:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return open_clip.CLIP(
            embed_dim=_TINY_CLIP_CFG["embed_dim"],
            vision_cfg=_TINY_CLIP_CFG["vision_cfg"],
            text_cfg={**_TINY_CLIP_CFG["text_cfg"], **text_overrides},
        ).eval()


def _encoder(model, context_length: int) -> OpenClipEncoder:
    return OpenClipEncoder(model, open_clip.get_tokenizer("ViT-B-32", context_length=context_length), None, None, "test")


def _tower_lengths(model) -> list[int]:
    """Records the sequence length of every pass through the text transformer."""
    lengths = []
    model.transformer.register_forward_hook(lambda module, args, out: lengths.append(args[0].shape[1]))
    return lengths


@pytest.mark.parametrize("text_overrides", [{}, {"pool_type": "eos", "eos_id": 49407}], ids=["argmax", "eos"])
def test_cut_tower_matches_encode_text_in_the_input_order(text_overrides):
    encoder = _encoder(_tiny_clip(**text_overrides), context_length=16)
    with torch.no_grad():
        reference = encoder.model.encode_text(encoder.tokenizer(TEXTS))  # (5, D), full 16-token context
        encoder.encode_text(TEXTS[:1])  # decides the path (the probe passes through the tower too)
        assert encoder._cuts_at_eot is True
        lengths = _tower_lengths(encoder.model)
        features = encoder.encode_text(TEXTS, batch_size=2)  # (5, D)
    # rows sorted by EOT position (2, 2, 5, 7, 15) in batches of 2: cut after positions 2, 7 and 15
    assert lengths == [3, 8, 16]
    torch.testing.assert_close(features, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layers", [3, pytest.param(12, marks=pytest.mark.slow)])
def test_cut_tower_matches_encode_text_with_vit_b32_text_tower(layers):
    # ViT-B-32's text tower as configured by open_clip (77 tokens, width 512, 8 heads; 12 layers, 3 in the
    # fast run), random init; a tiny image tower keeps the build fast
    config = open_clip.get_model_config("ViT-B-32")
    torch.manual_seed(0)
    text_cfg = {**config["text_cfg"], "layers": layers}
    model = open_clip.CLIP(embed_dim=config["embed_dim"], vision_cfg=_TINY_CLIP_CFG["vision_cfg"], text_cfg=text_cfg)
    encoder = _encoder(model.eval(), context_length=77)
    texts = TEXTS[:2] + ["a photo of a " + "very " * 80 + "long word."] + TEXTS[3:]  # a row truncated at 77 tokens
    with torch.no_grad():
        reference = encoder.model.encode_text(encoder.tokenizer(texts))  # (5, D)
        encoder._cuts_at_eot = cuts_at_eot(encoder.model)
        assert encoder._cuts_at_eot is True
        lengths = _tower_lengths(encoder.model)
        features = encoder.encode_text(texts, batch_size=4)  # (5, D)
    assert lengths == [8, 77]  # EOT positions 2, 2, 5, 7 | 76
    torch.testing.assert_close(features, reference, atol=1e-5, rtol=1e-5)


class _OwnEncodeText(open_clip.CLIP):
    def encode_text(self, text, normalize: bool = False):
        return super().encode_text(text, normalize) * 2


@pytest.mark.parametrize(
    "build",
    [
        lambda: _tiny_clip(no_causal_mask=True),  # bidirectional: padding reaches every position
        lambda: _tiny_clip(pool_type="last"),
        lambda: _tiny_clip(pool_type="first"),
        lambda: open_clip.CustomTextCLIP(**_TINY_CLIP_CFG).eval(),
        lambda: _OwnEncodeText(**_TINY_CLIP_CFG).eval(),
    ],
    ids=["no-causal-mask", "last-pooling", "first-pooling", "custom-text-clip", "own-encode-text"],
)
def test_towers_it_cannot_cut_keep_encode_text(build):
    encoder = _encoder(build(), context_length=16)
    with torch.no_grad():
        lengths = _tower_lengths(encoder.model) if hasattr(encoder.model, "transformer") else []
        features = encoder.encode_text(TEXTS, batch_size=2)  # (5, D)
        reference = torch.cat([encoder.model.encode_text(chunk) for chunk in encoder.tokenizer(TEXTS).split(2)])
    assert encoder._cuts_at_eot is False
    assert all(length == 16 for length in lengths)  # every pass over the full context
    assert torch.equal(features, reference)


def test_a_mask_that_is_not_causal_is_refused():
    model = _tiny_clip()
    assert cuts_at_eot(model)
    model.attn_mask[3, 0] = float("-inf")  # position 3 may not see position 0: not the causal mask
    assert not cuts_at_eot(model)


class _MixPositions(torch.nn.Module):
    """Subtracts the mean over the second-to-last dimension: positions on (B, L, W), rows on pooled (B, W)."""

    def forward(self, x):
        return x - x.mean(dim=-2, keepdim=True)


def test_probe_rejects_a_tower_that_mixes_positions_after_the_transformer():
    model = _tiny_clip()
    model.ln_final = _MixPositions()  # passes the structure checks; the cut changes what it computes
    assert not cuts_at_eot(model)


def test_tiny_random_preset_takes_the_cut():
    backbone = create_backbone("tiny-random")
    with torch.no_grad():
        features = backbone.encode_text(TEXTS)
        reference = backbone.model.encode_text(backbone.tokenizer(TEXTS))
    assert backbone._cuts_at_eot is True
    torch.testing.assert_close(features, reference, atol=1e-5, rtol=1e-5)
