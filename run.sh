#!/usr/bin/env bash
# zeroft in one command: set up .venv (once, and again when requirements change), then run.
#   bash run.sh app [app.py options]    the Gradio app on the embedded checkpoint
#   bash run.sh demo                    the CLI on the embedded checkpoint, images into outputs/demo
#   bash run.sh test [pytest options]   the test suite
set -euo pipefail
cd "$(dirname "$0")"

setup() {
  local stamp=.venv/.zeroft-requirements
  local want
  want=$(cat requirements.txt requirements-dev.txt constraints.txt | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return
  fi
  [ -d .venv ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first, from the local wheel cache where there is one; the requirements leave it unpinned.
  if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
    .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" \
      || .venv/bin/python -m pip install -q torch torchvision
  fi
  .venv/bin/python -m pip install -q -c constraints.txt -r requirements.txt -r requirements-dev.txt
  # rembg's matting library (pymatting) compiles its numba functions on first import and caches them beside the
  # package: about 40 s on 2 cores. Once here, not in the app's first automatic mask (or the first test that masks).
  .venv/bin/python -c "import rembg" >/dev/null 2>&1 || true
  echo "$want" > "$stamp"
}

export HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False

command=${1:-app}
shift || true
setup
case "$command" in
  app)  exec .venv/bin/python app.py "$@" ;;
  demo) exec .venv/bin/python -m zeroft generate --image assets/examples/object-01.png \
          --prompt "two objects on a white background" --num-images 4 --seed 0 --out outputs/demo "$@" ;;
  test) export HF_HUB_OFFLINE=1; exec .venv/bin/python -m pytest "$@" ;;
  *) echo "usage: bash run.sh app|demo|test" >&2; exit 2 ;;
esac
