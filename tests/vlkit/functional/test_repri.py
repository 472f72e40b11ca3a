"""RePRI's terms on inputs small enough to derive by hand, and the batched fit against the authors' loop."""

import math

import pytest
import torch

from vlkit.functional.repri import (
    cosine_logits,
    downsample_mask,
    foreground_probability,
    kl_weight_schedule,
    masked_prototypes,
    oracle_foreground_proportion,
    proportion_kl,
    prototype_baseline,
    query_entropy,
    repri_fit,
    soft_foreground_proportion,
    support_cross_entropy,
)


def test_masked_prototype_averages_foreground_over_shots_and_skips_ignored():
    # B=1, K=2, D=2, 1x2 grid. Shot 0: fg (1, 0) and bg (5, 5); shot 1: fg (0, 1) and ignored (9, 9).
    feats = torch.tensor([[[[1.0, 5.0]], [[0.0, 5.0]]], [[[0.0, 9.0]], [[1.0, 9.0]]]])[None]  # (1, 2, 2, 1, 2)
    masks = torch.tensor([[[1, 0]], [[1, 255]]])[None]  # (1, 2, 1, 2)
    # fg mean = ((1, 0) + (0, 1)) / 2 = (0.5, 0.5); bg mean = (5, 5)
    assert torch.allclose(masked_prototypes(feats, masks), torch.tensor([[0.5, 0.5]]))
    assert torch.allclose(masked_prototypes(feats, masks, label=0), torch.tensor([[5.0, 5.0]]))


def test_cosine_logits_scale_by_temperature():
    feats = torch.tensor([1.0, 0.0]).view(1, 1, 2, 1, 1)
    proto = torch.tensor([[2.0, 2.0]])
    # cos((1, 0), (2, 2)) = 2 / (1 * sqrt(8)) = 1 / sqrt(2); times tau = 20
    assert cosine_logits(feats, proto, 20.0).item() == pytest.approx(20 / math.sqrt(2), rel=1e-6)


def test_support_cross_entropy_by_hand():
    p = torch.tensor([[[[0.8, 0.3, 0.9]]]])  # (B=1, K=1, 1, 3)
    masks = torch.tensor([[[[1, 0, 255]]]])
    # fg pixel: -log 0.8; bg pixel: -log(1 - 0.3); ignored pixel left out; mean over the 2 valid pixels
    expected = (-math.log(0.8) - math.log(0.7)) / 2
    assert support_cross_entropy(p, masks).item() == pytest.approx(expected, rel=1e-5)


def test_query_entropy_by_hand_and_mask():
    p = torch.tensor([[[[0.5, 0.9]]]])  # (1, 1, 1, 2)
    h09 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    both = torch.ones(1, 1, 1, 2, dtype=torch.bool)
    assert query_entropy(p, both).item() == pytest.approx((math.log(2) + h09) / 2, rel=1e-5)
    only_first = torch.tensor([[[[True, False]]]])
    assert query_entropy(p, only_first).item() == pytest.approx(math.log(2), rel=1e-5)


def test_proportion_kl_by_hand_and_zero_at_match():
    p = torch.tensor([[[[0.2, 0.6]]]])
    valid = torch.ones(1, 1, 1, 2, dtype=torch.bool)
    # marginal fg = (0.2 + 0.6) / 2 = 0.4, bg 0.6; pi = 0.5: KL = 0.6 ln(0.6/0.5) + 0.4 ln(0.4/0.5)
    expected = 0.6 * math.log(1.2) + 0.4 * math.log(0.8)
    assert proportion_kl(p, valid, torch.tensor([0.5])).item() == pytest.approx(expected, rel=1e-5)
    assert proportion_kl(p, valid, torch.tensor([0.4])).item() == pytest.approx(0.0, abs=1e-6)


def test_proportions_soft_and_oracle():
    p = torch.tensor([[[[0.2, 0.6, 1.0]]]])
    valid = torch.tensor([[[[True, True, False]]]])
    assert soft_foreground_proportion(p, valid).item() == pytest.approx(0.4)
    masks = torch.tensor([[[[1, 0, 0, 255]]]])
    assert oracle_foreground_proportion(masks).item() == pytest.approx(1 / 3)  # 1 fg of 3 labelled


def test_kl_weight_schedule_matches_the_authors_off_by_one():
    # for it in range(1, 5): step with w, then if it + 1 in (3,): w += 1 -> steps 1, 2 use 0.5; 3, 4 use 1.5
    assert kl_weight_schedule(5, 0.5, (3,), 1.0) == [0.5, 0.5, 1.5, 1.5]
    weights = kl_weight_schedule(50, 1 / 5, (10,), 1.0)
    assert len(weights) == 49 and weights[8] == pytest.approx(0.2) and weights[9] == pytest.approx(1.2)
    assert kl_weight_schedule(4, 0.3, (), 1.0) == [0.3, 0.3, 0.3]


def test_downsample_mask_is_nearest():
    mask = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [255, 255, 1, 1], [255, 255, 1, 1]])[None]
    assert downsample_mask(mask, (2, 2)).tolist() == [[[0, 1], [255, 1]]]


def test_prototype_baseline_picks_the_nearer_prototype():
    # support: fg pixel (1, 0), bg pixel (0, 1); query pixels (1, 0.2) -> fg, (0.1, 1) -> bg
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 1, 1, 2, 2).permute(0, 1, 4, 2, 3)  # (1, 1, 2, 1, 2)
    m = torch.tensor([[[[1, 0]]]])
    q = torch.tensor([[1.0, 0.2], [0.1, 1.0]]).view(1, 1, 1, 2, 2).permute(0, 1, 4, 2, 3)
    logit = prototype_baseline(s, m, q, temperature=20.0)
    assert (logit > 0).tolist() == [[[[True, False]]]]


def _episodes(b=3, k=2, d=5, h=4, w=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, k, d, h, w, generator=g)
    q = torch.randn(b, 1, d, h, w, generator=g)
    m = (torch.rand(b, k, h, w, generator=g) > 0.6).long()
    m[:, :, 0, 0] = 1  # some foreground in every episode
    m[:, 0, -1, -1] = 255
    valid = torch.ones(b, 1, h, w, dtype=torch.bool)
    valid[:, :, -1] = False  # a padded row
    return s, m, q, valid


def _authors_loop(s, m, q, valid, temperature, lr, iterations, update_at, kl_w, h_w):
    """An independent restatement of the authors' ``RePRI`` loop for one batch: torch.optim.SGD, the
    two-class probability tensor and explicit marginals (no code shared with vlkit.functional.repri)."""
    sn = s / s.norm(dim=2, keepdim=True)
    qn = q / q.norm(dim=2, keepdim=True)
    fg = (m == 1).float().unsqueeze(2)
    proto = ((s * fg).sum(dim=(1, 3, 4)) / (fg.sum(dim=(1, 3, 4)) + 1e-10)).clone().requires_grad_()

    def logits(f):
        pn = proto / proto.norm(dim=1, keepdim=True)
        return temperature * torch.einsum("bndhw,bd->bnhw", f, pn)

    bias = logits(qn).detach().mean(dim=(1, 2, 3)).clone().requires_grad_()

    def probas(lg):
        pf = torch.sigmoid(lg - bias[:, None, None, None]).unsqueeze(2)
        return torch.cat([1 - pf, pf], dim=2)  # (B, N, 2, h, w)

    vq = valid.float()
    pq = probas(logits(qn)).detach()
    pi = (vq.unsqueeze(2) * pq).sum(dim=(1, 3, 4)) / vq.sum(dim=(1, 2, 3)).unsqueeze(1)  # (B, 2)
    vs = (m != 255).float()
    onehot = torch.stack([(m == 0).float(), (m == 1).float()], dim=2)
    opt = torch.optim.SGD([proto, bias], lr=lr)
    for it in range(1, iterations):
        ps, pq = probas(logits(sn)), probas(logits(qn))
        ce = -(vs.unsqueeze(2) * onehot * torch.log(ps + 1e-10)).sum(2).sum(dim=(1, 2, 3)) / vs.sum(dim=(1, 2, 3))
        ent = -(vq.unsqueeze(2) * pq * torch.log(pq + 1e-10)).sum(2).sum(dim=(1, 2, 3)) / vq.sum(dim=(1, 2, 3))
        marg = (vq.unsqueeze(2) * pq).sum(dim=(1, 3, 4)) / vq.sum(dim=(1, 2, 3)).unsqueeze(1)
        kl = (marg * torch.log(marg / (pi + 1e-10))).sum(1)
        loss = ce + kl_w * kl + h_w * ent
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        if it + 1 in update_at and kl_w != 0:  # the authors also require a non-zero KL weight (l2.sum() != 0)
            pq = probas(logits(qn)).detach()
            pi = (vq.unsqueeze(2) * pq).sum(dim=(1, 3, 4)) / vq.sum(dim=(1, 2, 3)).unsqueeze(1)
            kl_w += 1
    return proto.detach(), bias.detach(), pi[:, 1]


def test_repri_fit_matches_an_independent_restatement_of_the_authors_loop():
    s, m, q, valid = _episodes()
    s = s / s.norm(dim=2, keepdim=True)
    q = q / q.norm(dim=2, keepdim=True)
    res = repri_fit(s, m, q, valid, temperature=20.0, lr=0.025, iterations=15, proportion_update_at=(5,))
    proto, bias, pi = _authors_loop(s, m, q, valid, 20.0, 0.025, 15, (5,), 0.5, 0.5)
    # cosine logits are scale invariant in the prototype, so compare logits, biases and proportions
    assert torch.allclose(res.bias, bias, atol=1e-4)
    assert torch.allclose(cosine_logits(q, res.prototype, 20.0), cosine_logits(q, proto, 20.0), atol=1e-4)
    assert torch.allclose(res.proportion_final, pi, atol=1e-5)
    assert not torch.allclose(res.proportion_final, res.proportion_init)  # the update happened
    assert res.loss_history.shape == (14, 3)


def test_repri_fit_is_batched_exactly():
    s, m, q, valid = _episodes(b=4)
    batched = repri_fit(s, m, q, valid, iterations=12)
    for i in range(4):
        one = repri_fit(s[i : i + 1], m[i : i + 1], q[i : i + 1], valid[i : i + 1], iterations=12)
        assert torch.allclose(one.query_logits - one.bias, batched.query_logits[i : i + 1] - batched.bias[i], atol=1e-4)


def test_repri_fit_init_is_prototype_and_mean_bias_when_no_step():
    s, m, q, valid = _episodes()
    res = repri_fit(s, m, q, valid, iterations=1)
    assert torch.allclose(res.prototype, masked_prototypes(s, m))
    assert torch.allclose(res.bias, cosine_logits(q, masked_prototypes(s, m), 20.0).mean(dim=(1, 2, 3)))
    p = foreground_probability(res.query_logits, res.bias)
    assert torch.allclose(res.proportion_init, soft_foreground_proportion(p, valid))


def test_repri_fit_oracle_keeps_the_given_proportion_and_lowers_the_loss():
    s, m, q, valid = _episodes()
    truth = torch.tensor([0.1, 0.3, 0.5])
    res = repri_fit(s, m, q, valid, iterations=40, ce_weight=1.0, kl_weight=1.0, entropy_weight=0.1, oracle_proportion=truth)
    assert torch.equal(res.proportion_final, truth)
    assert (res.loss_history[-1] < res.loss_history[0]).all()


def test_kl_term_alone_pulls_the_marginal_to_the_target_proportion():
    s, m, q, valid = _episodes()
    truth = torch.tensor([0.1, 0.3, 0.8])
    start = repri_fit(s, m, q, valid, iterations=1)
    res = repri_fit(s, m, q, valid, lr=0.5, iterations=200, ce_weight=0.0, kl_weight=1.0, entropy_weight=0.0,
                    oracle_proportion=truth)  # fmt: skip
    before = soft_foreground_proportion(start.foreground_probability(), valid)
    after = soft_foreground_proportion(res.foreground_probability(), valid)
    assert ((after - truth).abs() < 0.02).all(), (before, after)
    assert ((before - truth).abs() > 0.05).any()  # it had somewhere to go


def test_repri_fit_runs_under_inference_mode():
    s, m, q, valid = _episodes()
    with torch.inference_mode():
        res = repri_fit(s, m, q, valid, iterations=3)
    assert torch.isfinite(res.query_logits).all() and res.loss_history.shape == (2, 3)


def test_repri_fit_shape_errors_name_the_argument():
    s, m, q, valid = _episodes()
    with pytest.raises(ValueError, match="support_masks"):
        repri_fit(s, m[:, :1], q, valid)
    with pytest.raises(ValueError, match="query_features"):
        repri_fit(s, m, q[:, :, :3], valid)
    with pytest.raises(ValueError, match="query_valid"):
        repri_fit(s, m, q, valid[:, :, :2])


@pytest.mark.gpu
def test_repri_fit_on_cuda_matches_cpu():
    s, m, q, valid = _episodes(b=6, k=3, d=16, h=8, w=8)
    cpu = repri_fit(s, m, q, valid, iterations=20)
    gpu = repri_fit(s.cuda(), m.cuda(), q.cuda(), valid.cuda(), iterations=20)
    assert gpu.query_logits.is_cuda
    assert torch.allclose(gpu.query_logits.cpu() - gpu.bias.cpu()[:, None, None, None],
                          cpu.query_logits - cpu.bias[:, None, None, None], atol=1e-3)  # fmt: skip


def test_repri_fit_zero_kl_weight_never_updates_the_proportion():
    # Issue 10 (1). The authors re-estimate pi, and add 1 to the KL weight, only when the KL weight is
    # non-zero (classifier.py: the update also needs `l2.sum() != 0`). With kl_weight = 0 (the paper's
    # CE + H ablation) the KL weight is therefore 0 at every step: the loss is CE + lambda_H * H throughout,
    # pi is never re-estimated, and the fit is the same as with no update scheduled. The kit used to skip
    # only when kl + entropy == 0, so here (entropy 0.5) pi moved after step 4 and the KL term came in at
    # weight 0 + 1 = 1 from step 5.
    s, m, q, valid = _episodes()
    s = s / s.norm(dim=2, keepdim=True)
    q = q / q.norm(dim=2, keepdim=True)
    res = repri_fit(s, m, q, valid, iterations=15, kl_weight=0.0, entropy_weight=0.5, proportion_update_at=(5,))
    no_update = repri_fit(s, m, q, valid, iterations=15, kl_weight=0.0, entropy_weight=0.5, proportion_update_at=())
    assert torch.equal(res.proportion_final, res.proportion_init)
    assert torch.equal(res.loss_history, no_update.loss_history)
    assert torch.equal(res.bias, no_update.bias) and torch.equal(res.prototype, no_update.prototype)
    # and the restated authors' loop (which checks the KL weight) lands on the same classifier
    proto, bias, pi = _authors_loop(s, m, q, valid, 20.0, 0.025, 15, (5,), 0.0, 0.5)
    assert torch.allclose(res.bias, bias, atol=1e-4)
    assert torch.allclose(cosine_logits(q, res.prototype, 20.0), cosine_logits(q, proto, 20.0), atol=1e-4)
    assert torch.allclose(res.proportion_final, pi, atol=1e-5)
