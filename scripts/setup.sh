#!/usr/bin/env bash
# Set up molfff in a virtual environment: .venv (or $VENV), created if missing.
# torch is installed only when the environment has none, pinned to $MOLFFF_TORCH
# (default 2.13.0, the CPU build these machines carry); an existing (GPU) torch is kept.
# Extras: $MOLFFF_EXTRAS (default dev,molecules,sbi).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: installing torch==${MOLFFF_TORCH:-2.13.0}" >&2
  "$VENV/bin/python" -m pip install -q "torch==${MOLFFF_TORCH:-2.13.0}"
fi
EXTRAS=${MOLFFF_EXTRAS:-dev,molecules,sbi}
echo "setup: installing molfff[$EXTRAS] (editable)" >&2
"$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
case ",$EXTRAS," in
  *,sbi,*)  # sbibm's metadata pins packages it does not need here; its tasks work without them
    "$VENV/bin/python" -m pip install -q --no-deps "sbibm==1.1.0" ;;
esac
"$VENV/bin/python" -c "import molfff, torch; print(f'setup: molfff {molfff.__version__}, torch {torch.__version__}')" >&2
