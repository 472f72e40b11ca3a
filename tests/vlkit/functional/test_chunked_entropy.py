"""The chunked log-softmax pass of ARES: sampled-token log-probs and full-vocabulary entropy together.

References are independent of the code under test: float64 ``log_softmax`` (the textbook definition
H = -sum p log p, which the kit computed before the fused pass), ``torch.distributions.Categorical`` and
autograd's gradient of ``gather - logsumexp`` (the kit's former ``sampled_token_logprobs``).
"""

import math
import weakref

import pytest
import torch
from torch.overrides import TorchFunctionMode

from vlkit.functional.entropy import token_chunks, token_entropy
from vlkit.functional.policy import sampled_token_logprobs, sampled_token_logprobs_and_entropy


def _reference(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 log p(o_t) and -sum p log p, the direct full-softmax definitions."""
    log_p = torch.log_softmax(logits.double(), dim=-1)  # (B, T, V)
    picked = log_p.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked, -(log_p.exp() * log_p).sum(-1)


def _rollout_logits(seed: int = 0, B: int = 3, P: int = 4, T: int = 7, V: int = 50):
    """(B, P + T, V) forward logits, large enough (scale 8) for cancellation to show, and the (B, T) view
    the trainer slices out of them, with right-padded (masked) completions whose pad id is 0."""
    g = torch.Generator().manual_seed(seed)
    full = torch.randn(B, P + T, V, generator=g) * 8.0
    tokens = torch.randint(1, V, (B, T), generator=g)
    lengths = torch.tensor([T, 4, 1] * B)[:B]  # (B,) a full, a shorter and a one-token completion
    mask = torch.arange(T)[None, :] < lengths[:, None]  # (B, T)
    tokens = tokens.masked_fill(~mask, 0)  # padding positions carry the pad id, as generate() leaves them
    return full, tokens, mask


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 8, 15, 1000])
def test_values_match_full_softmax_reference_at_every_chunk_size(chunk_size):
    full, tokens, _ = _rollout_logits()
    view = full[:, 3:-1]  # (B, T, V) a non-contiguous slice, as in LitARES.rollout_loss
    ref_lp, ref_h = _reference(view, tokens)
    logprobs, entropy = sampled_token_logprobs_and_entropy(view, tokens, chunk_size)
    # float32 arithmetic on logits of magnitude ~30: errors of a few 1e-6 against float64
    assert torch.allclose(logprobs.double(), ref_lp, atol=2e-5, rtol=0)
    assert torch.allclose(entropy.double(), ref_h, atol=2e-5, rtol=0)
    # padded positions get values too (the caller masks them), and the same ones as the reference
    assert torch.isfinite(entropy).all()
    # the one pass serves every caller: token_entropy (demo, evaluation) and the log-prob-only path
    assert torch.equal(token_entropy(view, chunk_size), entropy)
    assert torch.equal(sampled_token_logprobs(view, tokens, chunk_size), logprobs)
    # an independent reference of the entropy
    assert torch.allclose(entropy, torch.distributions.Categorical(logits=view).entropy(), atol=2e-5)


def test_chunking_does_not_change_values():
    full, tokens, _ = _rollout_logits(seed=1)
    view = full[:, 3:-1]
    lp1, h1 = sampled_token_logprobs_and_entropy(view, tokens, 1)
    for chunk_size in (2, 5, 7, 14, 21, 64):
        lp, h = sampled_token_logprobs_and_entropy(view, tokens, chunk_size)
        # each position is reduced over its own row of V values whatever the chunk: equal to rounding
        assert torch.allclose(lp, lp1, atol=1e-6, rtol=0) and torch.allclose(h, h1, atol=1e-6, rtol=0)


def test_hand_values_and_masked_vocabulary():
    # p = (1/2, 1/4, 1/4): H = 1/2 ln 2 + 2 * 1/4 ln 4 = 1.5 ln 2; log p(token 1) = ln 1/4
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))
    lp, h = sampled_token_logprobs_and_entropy(logits, torch.tensor([[1]]))
    assert lp.item() == pytest.approx(math.log(0.25), abs=1e-6)
    assert h.item() == pytest.approx(1.5 * math.log(2), abs=1e-6)
    # a vocabulary entry at -inf (a banned token) has p = 0 and adds 0, not NaN: (0, 0, -inf) -> ln 2
    banned = torch.tensor([[[0.0, 0.0, float("-inf")]]])
    assert token_entropy(banned).item() == pytest.approx(math.log(2), abs=1e-6)
    assert sampled_token_logprobs(banned, torch.tensor([[0]])).item() == pytest.approx(-math.log(2), abs=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 4, 32])
def test_gradient_matches_autograd_of_gather_minus_logsumexp(chunk_size):
    full, tokens, mask = _rollout_logits(seed=2)
    upstream = torch.randn(tokens.shape, generator=torch.Generator().manual_seed(3)) * mask  # masked tokens: 0

    ours = full.clone().requires_grad_()
    logprobs, entropy = sampled_token_logprobs_and_entropy(ours[:, 3:-1], tokens, chunk_size)
    assert logprobs.requires_grad and not entropy.requires_grad  # the entropy is a detached signal
    (logprobs * upstream).sum().backward()

    ref = full.clone().requires_grad_()
    z = ref[:, 3:-1]  # (B, T, V)
    ref_lp = z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)  # (B, T)
    (ref_lp * upstream).sum().backward()
    assert torch.allclose(ours.grad, ref.grad, atol=1e-6, rtol=0)
    # d/dz of log p(o_t) sums to 0 over the vocabulary at every position (softmax minus one-hot)
    assert ours.grad.sum(-1).abs().max() < 1e-5
    assert ours.grad[:, :3].abs().max() == 0 and ours.grad[:, -1].abs().max() == 0  # prompt, last position


def test_bfloat16_logits_match_the_float32_computation_of_the_same_values():
    full, tokens, _ = _rollout_logits(seed=4)
    half = full.bfloat16()
    lp, h = sampled_token_logprobs_and_entropy(half[:, 3:-1], tokens)
    ref_lp, ref_h = _reference(half[:, 3:-1].float(), tokens)  # same rounded logits, upcast
    assert lp.dtype == h.dtype == torch.float32
    assert torch.allclose(lp.double(), ref_lp, atol=2e-5) and torch.allclose(h.double(), ref_h, atol=2e-5)

    x = half.clone().requires_grad_()
    sampled_token_logprobs(x[:, 3:-1], tokens).sum().backward()
    y = half.clone().requires_grad_()
    z = y[:, 3:-1]
    (z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).float() - torch.logsumexp(z.float(), -1)).sum().backward()
    assert x.grad.dtype == torch.bfloat16
    # both round a float32 gradient of magnitude <= 1 to bfloat16 (8 bits: steps of 2^-8 near 1)
    assert torch.allclose(x.grad.float(), y.grad.float(), atol=2**-8, rtol=0)


@pytest.mark.parametrize("B,T,chunk", [(3, 7, 1), (3, 7, 3), (3, 7, 7), (3, 7, 15), (4, 5, 100), (2, 0, 4), (0, 3, 2)])
def test_token_chunks_tile_every_position_once_within_the_chunk_size(B, T, chunk):
    seen = torch.zeros(B, T, dtype=torch.long)
    for rows, positions in token_chunks(B, T, chunk):
        block = seen[rows, positions]  # (b, t)
        assert 0 < block.numel() <= chunk
        seen[rows, positions] += 1
    assert (seen == 1).all()
    with pytest.raises(ValueError, match="chunk_size"):
        list(token_chunks(B, T, 0))


class _Allocations(TorchFunctionMode):
    """The tensors the Python-level code under test allocates: every torch call's result on a storage not
    seen before (views and in-place results are not new), its size, and the peak of the bytes alive (a
    tensor stops counting when its Python object is freed; the (B, T) outputs are still alive at the end)."""

    def __init__(self, known: list[torch.Tensor]):
        super().__init__()
        self.known = {t.untyped_storage().data_ptr() for t in known}
        self.sizes: list[int] = []
        self.alive = self.peak = 0

    def _freed(self, pointer: int, nbytes: int) -> None:
        self.known.discard(pointer)  # the allocator may hand the address out again
        self.alive -= nbytes

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.known:
                pointer, nbytes = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
                self.known.add(pointer)
                self.sizes.append(nbytes)
                self.alive += nbytes
                self.peak = max(self.peak, self.alive)
                weakref.finalize(t, self._freed, pointer, nbytes)
        return out


def test_extra_memory_is_one_chunk_not_tokens_times_vocabulary():
    B, T, V, chunk = 4, 16, 64, 4
    full, tokens, _ = _rollout_logits(B=B, T=T, V=V)
    view = full[:, 3:-1]  # (4, 16, 64) a slice of the forward: reshape(-1, V) would copy it whole
    chunk_bytes = chunk * V * 4  # one float32 (chunk, V) buffer: 1 KiB, logits 16 KiB
    with _Allocations([full, tokens]) as tracker:
        token_entropy(view, chunk)
    assert max(tracker.sizes) == chunk_bytes  # the exp buffer is the largest allocation
    assert chunk_bytes <= tracker.peak < 2 * chunk_bytes  # and one at a time is alive
    # under autograd too, the forward builds nothing of (B, T, V) size (it saves the logits themselves)
    leaf = full.clone().requires_grad_()
    with _Allocations([full, tokens, leaf]) as tracker:
        sampled_token_logprobs_and_entropy(leaf[:, 3:-1], tokens, chunk)
    assert max(tracker.sizes) == chunk_bytes and tracker.peak < 2 * chunk_bytes
    # bfloat16 logits: the float32 upcast of a chunk is a second chunk-sized buffer, nothing bigger
    half = full.bfloat16()
    with _Allocations([half]) as tracker:
        token_entropy(half[:, 3:-1], chunk)
    assert max(tracker.sizes) == chunk_bytes and tracker.peak < 3 * chunk_bytes
