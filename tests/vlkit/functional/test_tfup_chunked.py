"""TFUP's prepared-cache inference and streamed selection against the direct formulas (issue 15).

The reference is the unchunked composition the kit computed before: s f W^T + alpha exp(-beta (1 - A)) L with
A = multi_level_similarity (or the cosine) and L the (M, C) values as a matrix product; the selection's reference
is select_confident_prototypes on the full (N, C) probability matrix.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vlkit.functional.tfup import (
    cache_logits,
    multi_level_similarity,
    prepare_tfup_cache,
    prepared_tfup_logits,
    select_confident_prototypes,
    select_confident_prototypes_from_features,
    tfup_logits,
)


def _reference(f, w, keys, values, alpha, beta, similarity="msm", logit_scale=100.0):
    zero_shot = logit_scale * F.normalize(f, dim=-1) @ F.normalize(w, dim=-1).T  # (N, C)
    if similarity == "msm":
        affinity = multi_level_similarity(f, keys, w)  # (N, M)
    else:
        affinity = F.normalize(f, dim=-1) @ F.normalize(keys, dim=-1).T  # (N, M)
    return zero_shot + alpha * cache_logits(affinity, values, beta)  # kernel @ L as a matmul


def _problem(n=60, c=7, k=3, d=16, seed=0, labels=None):
    g = torch.Generator().manual_seed(seed)
    f, w, keys = torch.randn(n, d, generator=g), torch.randn(c, d, generator=g), torch.randn(c * k, d, generator=g)
    if labels is None:  # K entries per class in a shuffled order (Tip-Adapter's shots need not be grouped)
        labels = torch.arange(c).repeat_interleave(k)[torch.randperm(c * k, generator=g)]
    return f, w, keys, F.one_hot(labels, c).float()


@pytest.mark.parametrize("similarity", ["msm", "cosine"])
@pytest.mark.parametrize("alpha, beta", [(0.3, 1.0), (3.0, 5.0), (1.0, 0.0), (1.0, 60.0)])
@pytest.mark.parametrize("chunk_size", [1, 7, None])
def test_prepared_logits_equal_the_direct_formula(similarity, alpha, beta, chunk_size):
    f, w, keys, values = _problem()
    ref = _reference(f, w, keys, values, alpha, beta, similarity)
    ours = tfup_logits(f, w, keys, values, alpha, beta, similarity=similarity, chunk_size=chunk_size)
    # float32 rounding only: relative 1e-5 of the largest logit (beta = 60 amplifies rounding through the exp)
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))


@pytest.mark.parametrize("layout", ["unequal-counts", "soft-values", "grouped-in-order"])
def test_every_value_layout_gives_the_matmul_result(layout):
    f, w, keys, values = _problem()
    if layout == "unequal-counts":  # index_add_ path: class 0 holds 5 entries, class 6 one
        labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 1])
        values = F.one_hot(labels, 7).float()
    elif layout == "soft-values":  # no class structure: the (n, M) @ (M, C) product
        values = torch.softmax(torch.randn(21, 7, generator=torch.Generator().manual_seed(1)), -1)
    else:
        values = F.one_hot(torch.arange(7).repeat_interleave(3), 7).float()
    cache = prepare_tfup_cache(w, keys, values)
    assert (cache.entry_class is not None) == (layout == "unequal-counts")
    assert (cache.values is not None) == (layout == "soft-values")
    ref = _reference(f, w, keys, values, 0.3, 1.0)
    assert torch.allclose(prepared_tfup_logits(f, cache, chunk_size=8), ref, rtol=1e-5, atol=1e-3)


def test_cache_sum_by_hand_on_both_one_hot_layouts():
    # beta = 0: every cache entry weighs exp(0) = 1, so the cache adds alpha * (number of entries of class c);
    # logit_scale 1 and orthogonal features make the zero-shot part the identity
    f, w = torch.eye(2, 4), torch.eye(2, 4)
    keys = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    unequal = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # class 0 twice, class 1 once
    out = tfup_logits(f, w, keys, unequal, alpha=0.5, beta=0.0, logit_scale=1.0, similarity="cosine")
    assert torch.allclose(out, torch.eye(2) + torch.tensor([1.0, 0.5]))
    equal = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # two each, interleaved
    out = tfup_logits(f, w, torch.randn(4, 4), equal, alpha=0.5, beta=0.0, logit_scale=1.0, similarity="cosine")
    assert torch.allclose(out, torch.eye(2) + 1.0)


def test_shot_major_layout_keeps_each_key_with_its_class():
    f, w, keys, values = _problem(c=4, k=2)
    cache = prepare_tfup_cache(w, keys, values, similarity="cosine")
    assert cache.shots_per_class == 2 and cache.entry_class is None and cache.values is None
    labels = values.argmax(1)
    for column in range(8):  # column s * C + c holds a key of class c
        key = cache.keys[column]
        match = (F.normalize(keys, dim=-1) - key).abs().sum(1).argmin()
        assert labels[match] == column % 4


def test_constant_kl_rows_keep_the_cosine():
    # identical keys: every KL row is constant, so S = 1 and A = cos (multi_level_similarity's rule)
    f, w = torch.randn(5, 4), torch.randn(3, 4)
    keys = torch.randn(1, 4).repeat(6, 1)
    values = F.one_hot(torch.arange(3).repeat(2), 3).float()
    ref = _reference(f, w, keys, values, 0.3, 1.0, "cosine")
    assert torch.allclose(tfup_logits(f, w, keys, values), ref, atol=1e-4)



@pytest.mark.parametrize("chunk_size", [1, None])
def test_constant_and_informative_rows_in_one_chunk_by_hand(chunk_size):
    # W = I, keys e0 (class 0) and e1 (class 1), so q_1 = softmax([10, 0]) and q_2 = softmax([0, 10]) mirror each other.
    # Row f = (1, 1)/sqrt2: p = (1/2, 1/2), both KLs equal -> constant row, S = 1, A = cos = 1/sqrt2 for both keys.
    # Row f = e0: p = q_1, KL = (0, KL(q_1 || q_2) > 0) -> S = (2, 0), A = (1 * 2, 0 * 0) = (2, 0).
    w, keys = torch.eye(2), torch.eye(2)
    values = torch.eye(2)
    f = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    out = tfup_logits(f, w, keys, values, alpha=0.3, beta=1.0, logit_scale=100.0, chunk_size=chunk_size)
    r = 2**-0.5
    constant_row = 100 * r + 0.3 * torch.exp(torch.tensor(r - 1.0))  # s cos + alpha exp(-(1 - A)), both classes
    expected = torch.tensor([[constant_row, constant_row], [100 + 0.3 * torch.e, 0.3 / torch.e]])
    assert torch.allclose(out, expected, atol=1e-4), out


def test_work_memory_is_reused_and_never_shared():
    import copy
    import pickle

    f, w, keys, values = _problem(n=50)
    cache = prepare_tfup_cache(w, keys, values)
    first = prepared_tfup_logits(f, cache, chunk_size=16)
    memory = cache.workspace.memory
    assert memory is not None
    second = prepared_tfup_logits(f[:20], cache, chunk_size=16)  # needs no more memory: the same buffer again
    assert cache.workspace.memory.data_ptr() == memory.data_ptr()
    assert torch.equal(second, first[:20])
    for clone in (copy.deepcopy(cache), pickle.loads(pickle.dumps(cache))):  # a copy starts with its own, empty one
        assert clone.workspace is not cache.workspace and clone.workspace.memory is None
        assert torch.equal(prepared_tfup_logits(f, clone, chunk_size=16), first)
    with cache.workspace.lock:  # busy (as while another thread scores with it): the call takes fresh memory
        assert torch.equal(prepared_tfup_logits(f, cache, chunk_size=16), first)
    assert cache.workspace.memory.data_ptr() == memory.data_ptr()


def test_default_chunks_keep_the_work_memory_under_32_mib():
    # glibc keeps a freed block of at most 32 MiB for the next call; a larger work memory would fault its pages in
    # afresh on every call (two (1024, M) buffers at DomainNet's M = 5,520 are 45 MB)
    f, w, keys, values = _problem(n=2000, c=345, k=16, d=8)
    cache = prepare_tfup_cache(w, keys, values)
    prepared_tfup_logits(f, cache)
    used = cache.workspace.memory.numel() * cache.workspace.memory.element_size()
    assert 20 << 20 < used <= 30 << 20, used / 2**20

def test_one_prepared_cache_serves_many_batches():
    f, w, keys, values = _problem(n=50)
    cache = prepare_tfup_cache(w, keys, values)
    batches = torch.cat([prepared_tfup_logits(f[i : i + 16], cache) for i in range(0, 50, 16)])
    assert torch.allclose(batches, tfup_logits(f, w, keys, values), atol=1e-4)


def test_prepared_inputs_are_checked():
    f, w, keys, values = _problem()
    with pytest.raises(ValueError, match="cache_keys must be finite"):
        prepare_tfup_cache(w, keys.clone().fill_(float("nan")), values)
    with pytest.raises(ValueError, match="cache_keys must hold at least one"):
        prepare_tfup_cache(w, keys[:0], values[:0])
    cache = prepare_tfup_cache(w, keys, values)
    with pytest.raises(ValueError, match="test_features must be \\(N, D\\) with the cache's D = 16"):
        prepared_tfup_logits(f[:, :8], cache)
    bad = f.clone()
    bad[40, 3] = float("inf")
    with pytest.raises(ValueError, match="test_features must be finite, got 1 NaN or inf"):
        prepared_tfup_logits(bad, cache, chunk_size=7)  # found in a later chunk, before any work


@pytest.mark.parametrize("chunk_size", [1, 13, 8192])
def test_streamed_selection_equals_the_full_matrix(chunk_size):
    g = torch.Generator().manual_seed(2)
    feats, w = torch.randn(300, 16, generator=g), F.normalize(torch.randn(6, 16, generator=g), dim=-1)
    probs = torch.softmax(10 * F.normalize(feats, dim=-1) @ w.T, dim=-1)  # (N, C)
    for shots in (1, 4, 9):
        expected = select_confident_prototypes(probs, shots)
        assert torch.equal(select_confident_prototypes_from_features(feats, w, shots, chunk_size=chunk_size), expected)


def test_streamed_selection_checks_its_inputs():
    feats, w = torch.randn(5, 4), torch.randn(2, 4)
    with pytest.raises(ValueError, match="shots=6 per class needs at least 6 samples, got N=5"):
        select_confident_prototypes_from_features(feats, w, 6)
    feats[3, 1] = float("nan")
    with pytest.raises(ValueError, match="features must be finite"):
        select_confident_prototypes_from_features(feats, w, 2, chunk_size=2)


_PEAK_SCRIPT = textwrap.dedent(
    """
    import torch, torch.nn.functional as F
    from vlkit.functional.tfup import prepare_tfup_cache, prepared_tfup_logits, select_confident_prototypes_from_features

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    torch.set_num_threads(1)  # peak memory does not depend on it; a loaded machine runs one thread faster
    w, keys = torch.randn(10, 32), torch.randn(40, 32)
    cache = prepare_tfup_cache(w, keys, F.one_hot(torch.arange(10).repeat(4), 10).float())
    prepared_tfup_logits(torch.randn(5000, 32), cache)  # warm-up: allocator and BLAS buffers
    for n in (20_000, 200_000):
        f = torch.randn(n, 32)
        before = rss("VmRSS")
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
        index = select_confident_prototypes_from_features(f, w, 16)
        out = prepared_tfup_logits(f, cache)
        print(n, rss("VmHWM") - before - out.numel() * 4)
        del f, out
    """
)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_peak_memory_beyond_inputs_and_outputs_is_flat_in_n():
    # Unchunked, 200k rows would hold a 200k x 40 affinity (32 MB), a 200k x 10 probability matrix (8 MB) and a
    # 200k x 32 finiteness mask (6.4 MB); chunked, the extra memory is the per-chunk buffers at any N.
    run = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT], capture_output=True, text=True, timeout=120, check=True)
    excess = dict(map(int, line.split()) for line in run.stdout.split("\n") if line.strip())
    assert excess[200_000] < excess[20_000] + 2 * 2**20, excess  # measured: 2.9 MB at 20k, < 0.1 MB more at 200k
    assert excess[200_000] < 6 * 2**20, excess


@pytest.mark.gpu
def test_prepared_logits_and_selection_on_cuda_match_cpu():
    f, w, keys, values = _problem(n=3000, c=12, k=4, d=64)
    cpu = tfup_logits(f, w, keys, values, chunk_size=512)
    gpu = tfup_logits(f.cuda(), w.cuda(), keys.cuda(), values.cuda(), chunk_size=512)
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, rtol=1e-4, atol=1e-3)
    unit_w = F.normalize(w, dim=-1).cuda()
    probs = torch.softmax(10 * F.normalize(f.cuda(), dim=-1) @ unit_w.T, dim=-1)  # (N, C) on the GPU
    picked = select_confident_prototypes_from_features(f.cuda(), unit_w, 5, chunk_size=700)
    assert picked.is_cuda and torch.equal(picked, select_confident_prototypes(probs, 5))


def test_lit_tfup_prepares_again_after_an_in_place_change_of_its_cache():
    """The prepared cache is keyed on the tensors and their version counters: an in-place write (as
    ``load_state_dict`` or ``mul_`` does) keeps the tensor object but must not leave a stale cache."""
    from vlkit.methods.tfup import LitTFUP

    g = torch.Generator().manual_seed(0)
    module = LitTFUP()
    module.register_buffer("class_weights", F.normalize(torch.randn(3, 8, generator=g), dim=-1), persistent=False)
    module.cache_keys = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    module.cache_values = F.one_hot(torch.arange(6) % 3, 3).float()
    module.logit_scale = 100.0
    features = F.normalize(torch.randn(5, 8, generator=g), dim=-1)

    def direct():
        return tfup_logits(features, module.class_weights, module.cache_keys, module.cache_values,
                           alpha=module.cache.alpha, beta=module.cache.beta, temperature=module.cache.temperature)

    torch.testing.assert_close(module(features), direct())
    module.cache_keys.copy_(F.normalize(torch.randn(6, 8, generator=g), dim=-1))  # same object, new values
    module.class_weights.mul_(-1.0)
    torch.testing.assert_close(module(features), direct())
