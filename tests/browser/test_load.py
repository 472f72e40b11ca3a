"""Many users at once: 20 concurrent requests through gradio_client to one tab all succeed (they wait in
Gradio's queue, at most 2 running), and an upload over max_file_size is refused."""

from __future__ import annotations

import re
import time

import pytest

pytestmark = pytest.mark.browser


def test_twenty_concurrent_requests_to_the_ares_tab_all_succeed(app_url):
    client_mod = pytest.importorskip("gradio_client")
    client = client_mod.Client(app_url, verbose=False)
    start = time.perf_counter()
    # seeds 0..19: each request is its own sampling; same inputs otherwise
    jobs = [
        client.submit("What is 2 + 3?", "5", "tiny-random-lm", "", "easy", 1, 0.5, 1.0, 8, seed, api_name="/analyze")
        for seed in range(20)
    ]
    results = [job.result(timeout=300) for job in jobs]
    elapsed = time.perf_counter() - start
    assert len(results) == 20
    for html_tokens, summary in results:
        assert 1 <= html_tokens.count("<span title=") <= 8
        assert re.search(r"AEPO reward.*\*\*[+-]\d\.\d{3}\*\*", summary), summary
    # Not asserted: that a seed gives the same answer with and without other requests beside it. It does
    # not today: demos/ares.py seeds the global torch RNG (torch.manual_seed), which the 2 concurrent
    # workers share, so their sampling draws interleave (reported to the ARES owner).
    print(f"20 concurrent requests in {elapsed:.1f} s")


def test_upload_over_the_size_limit_is_refused(app_url):
    """The app is launched with max_file_size="1mb" (conftest): 2 MB is refused with 413, 100 kB accepted."""
    import httpx

    big, small = b"\x00" * (2 * 1024 * 1024), b"\x00" * (100 * 1024)
    refused = httpx.post(f"{app_url}/gradio_api/upload", files={"files": ("big.png", big, "image/png")}, timeout=60)
    assert refused.status_code == 413, refused.text
    accepted = httpx.post(f"{app_url}/gradio_api/upload", files={"files": ("small.png", small, "image/png")}, timeout=60)
    assert accepted.status_code == 200, accepted.text
