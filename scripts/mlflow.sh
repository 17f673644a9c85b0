#!/usr/bin/env bash
# MLflow, to watch training curves in a browser tab (src/track.rs says how runs log to it).
#
#   bash scripts/mlflow.sh install        MLflow into .venv-mlflow/, unless it is there and current
#   bash scripts/mlflow.sh serve [PORT]   install, then the server on http://127.0.0.1:PORT (5000),
#                                         its runs and files under runs/mlflow/
#
# MLflow is large and not part of the lab's setup: it gets its own venv, from the exact pins
# of scripts/requirements-mlflow.txt (a stamp records which ones it was built from).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=$root/.venv-mlflow
requirements=scripts/requirements-mlflow.txt

say() { printf '\033[1m[mlflow]\033[0m %s\n' "$*"; }

install() {
  local stamp=$venv/.requirements.sha256 want
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    command -v python3 >/dev/null || { echo "python3 not found: install Python 3.11 or newer" >&2; exit 1; }
    say "installing MLflow into .venv-mlflow (first time: a minute or two, about 800 MB)"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -r "$requirements"
    echo "$want" > "$stamp"
  fi
}

serve() {
  local port=${1:-5000} store=$root/runs/mlflow
  install
  mkdir -p "$store"
  say "MLflow UI on http://127.0.0.1:$port (runs under runs/mlflow/; Ctrl-C stops it)"
  say "train with: MLFLOW_TRACKING_URI=http://127.0.0.1:$port make lab   (or llm train --mlflow http://127.0.0.1:$port)"
  # One worker is plenty on a laptop; the job runner (GenAI evaluation jobs) is not needed.
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false exec "$venv/bin/mlflow" server \
    --host 127.0.0.1 --port "$port" --workers 1 \
    --backend-store-uri "sqlite:///$store/mlflow.db" --artifacts-destination "$store/artifacts"
}

case "${1:-}" in
  install) install ;;
  serve) shift; serve "$@" ;;
  *) echo "usage: bash scripts/mlflow.sh install | serve [PORT]" >&2; exit 2 ;;
esac
