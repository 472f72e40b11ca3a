"""Dense feature extractors used by RePRI: shapes, frozen weights, level fusion, the head."""

import pytest
import torch
import torch.nn.functional as F

from vlkit.models.dense import SegmentationHead, create_dense_backbone


def test_tiny_random_is_deterministic_and_frozen():
    a, b = create_dense_backbone("tiny-random"), create_dense_backbone("tiny-random")
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(a(x), b(x)) and a(x).shape == (2, 16, 8, 8)
    assert not any(p.requires_grad for p in a.parameters())
    a.train()
    assert not a.trunk.training  # stays in eval mode


def test_lite0_levels_are_fused_on_the_stride_8_grid():
    model = create_dense_backbone("lite0-offline")
    assert model.out_channels == 40 + 112 and model.stride == 8 and model.mean == (0.5, 0.5, 0.5)
    x = torch.randn(1, 3, 64, 64)
    out = model(x)
    assert out.shape == (1, 152, 8, 8)
    level2, level3 = model.trunk(x)  # (1, 40, 8, 8), (1, 112, 4, 4)
    assert torch.allclose(out[:, :40], level2)
    assert torch.allclose(out[:, 40:], F.interpolate(level3, size=(8, 8), mode="bilinear", align_corners=False))


def test_bad_names_and_inputs():
    with pytest.raises(ValueError, match="unknown dense backbone"):
        create_dense_backbone("vgg-from-nowhere")
    with pytest.raises(TypeError, match="name"):
        create_dense_backbone(3)
    with pytest.raises(ValueError, match="images"):
        create_dense_backbone("tiny-random")(torch.randn(3, 32, 32))


def test_segmentation_head_shapes():
    head = SegmentationHead(16, 9, bottleneck=8)
    feats = torch.randn(2, 16, 5, 5)
    assert head.embed(feats).shape == (2, 8, 5, 5) and head(feats).shape == (2, 9, 5, 5)


def test_open_clip_patch_tokens_as_a_feature_map():
    import open_clip

    from vlkit.models.dense import dense_from_open_clip

    torch.manual_seed(0)
    clip = open_clip.CLIP(
        embed_dim=16,
        vision_cfg={"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
        text_cfg={"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    )
    dense = dense_from_open_clip(clip, "tiny-clip")
    out = dense(torch.randn(2, 3, 32, 32))
    # 32 px / patch 8 = a 4x4 grid of 32-channel tokens (the last block's output, class token dropped)
    assert out.shape == (2, 32, 4, 4) and dense.stride == 8 and dense.out_channels == 32
    assert not any(p.requires_grad for p in dense.parameters())
