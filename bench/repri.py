"""RePRI inference: ours (``repri_fit``) against the authors' batched classifier, at their feature size.

    python bench/repri.py            # 16 1-shot episodes, D = 512, 53 x 53 grid, 5 paired repetitions
    python bench/repri.py --quick    # the same size, 3 paired repetitions

Sizes: the authors' PSPNet features (512 channels on a 53 x 53 grid for 417-px inputs), 1 shot, a batch of
16 episodes optimised together, their defaults (tau 20, SGD lr 0.025, ``adapt_iter`` 50 = 49 steps,
weights (1, 1/K, 1/K), pi re-estimated at step 10). Features are random unit vectors plus a shared object
direction inside a square blob of each support and query; masks are at the feature resolution.

Baseline: the authors' classifier, restated by us (official code mboudiaf/RePRI-for-Few-Shot-Segmentation:
``Classifier`` in ``src/classifier.py`` and the timed part of ``episodic_validate`` in ``src/test.py``).
Their hot path, kept as is: all tasks of the batch at once; features normalised along channels; masks
resized by nearest interpolation; masked-mean prototypes, bias = mean query logit, the F/B proportion from
the soft query posterior (with the oracle one-hot they always build); then ``adapt_iter - 1`` steps of
``torch.optim.SGD``, each recomputing the logits of supports and query by ``permute`` + ``matmul`` with
both norms, the two-class probability tensor (``cat`` of 1 - p and p), the entropies, the marginal KL and
the CE over one-hot labels, then ``backward``; pi re-estimated (and lambda_KL + 1) at ``FB_param_update``.
They mark valid query pixels by ``gt_q != 255``; ours gets the same mask as ``query_valid``.

Ours: ``vlkit.functional.repri.repri_fit`` (features laid out once as (B, D, P) columns with their norms,
one batched product per step, closed-form-free autograd on (prototype, bias) only).

Prints ``RATIO repri_vs_authors`` (the authors' time / ours, goal >= 10) after checking that both give the
same query masks (foreground where the final logit minus the bias is > 0).
"""

from __future__ import annotations

import argparse

from _common import paired_ratio, pin_threads, print_ratio

pin_threads(1)

import torch  # noqa: E402  (after the threads are pinned)
import torch.nn.functional as F  # noqa: E402

from vlkit.functional.repri import repri_fit  # noqa: E402


def make_episodes(b: int, k: int, d: int, side: int, seed: int = 0):
    """Support features (B, K, D, h, w), masks (B, K, h, w), query features (B, 1, D, h, w) and query labels."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, k, d, side, side, generator=g)
    q = torch.randn(b, 1, d, side, side, generator=g)
    obj = F.normalize(torch.randn(b, d, generator=g), dim=1) * d**0.5  # a shared "object" direction per episode
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    masks = torch.zeros(b, k, side, side, dtype=torch.long)
    query_labels = torch.zeros(b, 1, side, side, dtype=torch.long)
    for i in range(b):
        for j in range(k + 1):
            cy, cx = torch.randint(side // 4, 3 * side // 4, (2,), generator=g).tolist()
            blob = ((yy - cy).abs() <= side // 5) & ((xx - cx).abs() <= side // 5)  # (h, w)
            target = s[i, j] if j < k else q[i, 0]
            target += 1.5 * obj[i, :, None, None] * blob
            (masks[i, j] if j < k else query_labels[i, 0])[blob] = 1
    return s, masks, q, query_labels


class AuthorsClassifier:
    """Their ``Classifier`` for one batch of tasks (binary: background / foreground).

    Args:
        temperature: tau (20). adapt_iter: their ``adapt_iter`` (50 = 49 SGD steps). lr: SGD lr (0.025).
        fb_param_update: steps after which pi is re-estimated ([10]).
    """

    def __init__(self, temperature=20.0, adapt_iter=50, lr=0.025, fb_param_update=(10,)):
        self.temperature, self.adapt_iter, self.lr, self.fb_param_update = temperature, adapt_iter, lr, fb_param_update

    @staticmethod
    def one_hot(mask):  # their util.to_one_hot: (B, N, h, w) -> (B, N, 2, h, w), 255 mapped to 0
        out = torch.zeros(*mask.shape[:2], 2, *mask.shape[2:])
        labels = mask.unsqueeze(2).clone()
        labels[torch.where(labels == 255)] = 0
        return out.scatter_(2, labels, 1)

    def get_logits(self, feats):  # (B, N, c, h, w) -> (B, N, h, w): tau cos, by permute + matmul
        feats = feats.permute((0, 1, 3, 4, 2))  # (B, N, h, w, c)
        proto = self.prototype.unsqueeze(1).unsqueeze(2)  # (B, 1, 1, c)
        cos = feats.matmul(proto.unsqueeze(4)).squeeze(4)  # (B, N, h, w)
        cos = cos / (proto.unsqueeze(3).norm(dim=4) * feats.norm(dim=4) + 1e-10)
        return self.temperature * cos

    def get_probas(self, logits):  # (B, N, h, w) -> (B, N, 2, h, w)
        fg = torch.sigmoid(logits - self.bias.unsqueeze(1).unsqueeze(2).unsqueeze(3)).unsqueeze(2)
        return torch.cat([1 - fg, fg], dim=2)

    def init_prototypes(self, feats_s, feats_q, gt_s):
        ds_gt_s = F.interpolate(gt_s.float(), size=feats_s.shape[-2:], mode="nearest").long().unsqueeze(2)
        fg = ds_gt_s == 1  # (B, K, 1, h, w)
        self.prototype = (feats_s * fg).sum(dim=(1, 3, 4)) / (fg.sum(dim=(1, 3, 4)) + 1e-10)  # (B, c)
        self.bias = self.get_logits(feats_q).mean(dim=(1, 2, 3))  # (B,)

    def compute_fb_param(self, feats_q, gt_q):
        ds_gt_q = F.interpolate(gt_q.float(), size=feats_q.shape[-2:], mode="nearest").long()
        valid = (ds_gt_q != 255).unsqueeze(2)  # (B, 1, 1, h, w)
        oracle = (valid * self.one_hot(ds_gt_q)).sum(dim=(1, 3, 4)) / valid.sum(dim=(1, 3, 4))  # built, unused
        probas = self.get_probas(self.get_logits(feats_q)).detach()
        self.fb_param = (valid * probas).sum(dim=(1, 3, 4)) / valid.sum(dim=(1, 3, 4))  # (B, 2)
        return oracle

    def entropies(self, valid, probas):  # their get_entropies, reduction 'none'
        cond = -(valid.unsqueeze(2) * (probas * torch.log(probas + 1e-10))).sum(2).sum(dim=(1, 2, 3))
        cond = cond / valid.sum(dim=(1, 2, 3))
        marginal = (valid.unsqueeze(2) * probas).sum(dim=(1, 3, 4)) / valid.sum(dim=(1, 2, 3)).unsqueeze(1)
        d_kl = (marginal * torch.log(marginal / (self.fb_param + 1e-10))).sum(1)
        return d_kl, cond

    @staticmethod
    def cross_entropy(probas, valid, one_hot):  # their get_ce, reduction 'none'
        ce = -(valid.unsqueeze(2) * (one_hot * torch.log(probas + 1e-10))).sum(2).sum(dim=(1, 2, 3))
        return ce / valid.sum(dim=(1, 2, 3))

    def repri(self, feats_s, feats_q, gt_s, gt_q, n_shots):
        l1, l2, l3 = 1.0, 1 / n_shots, 1 / n_shots  # weights (1, 'auto', 'auto')
        self.prototype.requires_grad_()
        self.bias.requires_grad_()
        optimizer = torch.optim.SGD([self.prototype, self.bias], lr=self.lr)
        ds_gt_q = F.interpolate(gt_q.float(), size=feats_s.shape[-2:], mode="nearest").long()
        ds_gt_s = F.interpolate(gt_s.float(), size=feats_s.shape[-2:], mode="nearest").long()
        valid_q, valid_s = (ds_gt_q != 255).float(), (ds_gt_s != 255).float()
        one_hot_s = self.one_hot(ds_gt_s)
        for iteration in range(1, self.adapt_iter):
            proba_q = self.get_probas(self.get_logits(feats_q))
            proba_s = self.get_probas(self.get_logits(feats_s))
            d_kl, cond = self.entropies(valid_q, proba_q)
            ce = self.cross_entropy(proba_s, valid_s, one_hot_s)
            loss = l1 * ce + l2 * d_kl + l3 * cond
            optimizer.zero_grad()
            loss.sum(0).backward()
            optimizer.step()
            if (iteration + 1) in self.fb_param_update and l2.sum().item() != 0:
                self.compute_fb_param(feats_q, gt_q)
                l2 = l2 + 1


def authors_fit(s, masks, q, query_labels) -> torch.Tensor:
    """The timed part of their ``episodic_validate``: normalise, init, F/B parameter, RePRI. Returns the masks."""
    feats_s, feats_q = F.normalize(s, dim=2), F.normalize(q, dim=2)
    classifier = AuthorsClassifier()
    classifier.init_prototypes(feats_s, feats_q, masks)
    classifier.compute_fb_param(feats_q, query_labels)
    classifier.repri(feats_s, feats_q, masks, query_labels, torch.full((s.shape[0],), float(s.shape[1])))
    with torch.no_grad():
        logits = classifier.get_logits(feats_q)  # (B, 1, h, w)
        return (logits - classifier.bias[:, None, None, None]) > 0


def our_fit(s, masks, q, query_labels) -> torch.Tensor:
    """The same job with ``repri_fit``: features normalised along channels (as ``LitRePRI`` does), same valid mask."""
    result = repri_fit(F.normalize(s, dim=2), masks, F.normalize(q, dim=2), query_labels != 255)
    return (result.query_logits - result.bias[:, None, None, None]) > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--dim", type=int, default=512, help="feature channels D (the authors' PSPNet: 512)")
    parser.add_argument("--grid", type=int, default=53, help="feature grid side (the authors': 53 for 417 px)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    s, masks, q, query_labels = make_episodes(args.episodes, args.shots, args.dim, args.grid)
    last = {}  # the masks of the last timed calls, checked below (no extra run of the slow baseline)
    ratio, t_theirs, t_ours = paired_ratio(
        lambda: last.update(theirs=authors_fit(s, masks, q, query_labels)),
        lambda: last.update(ours=our_fit(s, masks, q, query_labels)),
        repeats=repeats,
        warmup=0,
    )
    differ = int((last["theirs"] != last["ours"]).sum())
    print(f"episodes={args.episodes} shots={args.shots} D={args.dim} grid={args.grid}x{args.grid} "
          f"threads={torch.get_num_threads()}; query pixels that differ: {differ} of {last['ours'].numel()}")
    if differ > 1e-4 * last["ours"].numel():
        raise SystemExit("the authors' classifier and repri_fit predict different query masks")
    print(f"authors {t_theirs:.3f} s, ours {t_ours:.3f} s per batch of {args.episodes} episodes")
    print_ratio("repri_vs_authors", ratio, goal=">= 10",
                detail=f"{args.shots}-shot, {args.episodes} episodes, {args.grid}x{args.grid}, D={args.dim}")


if __name__ == "__main__":
    main()
