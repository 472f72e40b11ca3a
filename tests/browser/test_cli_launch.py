"""`vlkit demo` (the console script) serves the whole app on 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent; picks the outgoing interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_vlkit_demo_serves_every_tab_on_localhost_only(tmp_path):
    import httpx

    port = _free_port()
    vlkit = Path(sys.executable).with_name("vlkit")
    cmd = [str(vlkit)] if vlkit.exists() else [sys.executable, "-m", "vlkit.cli"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen([*cmd, "demo", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, config = time.time() + 240, None
        while time.time() < deadline and proc.poll() is None:
            try:
                config = httpx.get(f"http://127.0.0.1:{port}/config", timeout=5).json()
                break
            except (httpx.HTTPError, json.JSONDecodeError):
                time.sleep(1)
        assert config is not None, proc.stdout.read() if proc.poll() is not None else "no answer within 240 s"
        labels = {c.get("props", {}).get("label") for c in config["components"]}
        assert {"TFUP", "ProAPO", "RePRI", "MiniOneRec", "ARES"} <= labels
        address = _non_loopback_address()
        if address is not None:  # the same port on the machine's network address is closed
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((address, port)) != 0, f"the app answers on {address}:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
