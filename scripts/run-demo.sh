#!/bin/sh
# `make run`: serves the demo model (mkmodel --preset demo: random weights on
# the real DeepSeek vocabulary and small dimensions, so it runs on a CPU and
# speaks through the real tokenizer and chat template) with the
# OpenAI-compatible server, after printing a curl line to try.
#
# usage: scripts/run-demo.sh [BUILD]   (HOST, PORT and BACKEND from the
# environment; defaults 127.0.0.1, 8000, cpu)
set -eu
BUILD=${1:-build}
cd "$(dirname "$0")/.." || exit 1
BIN="$BUILD/v4serve"
DEMO=.data/demo
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
BACKEND=${BACKEND:-cpu}

if [ ! -x "$BIN" ]; then
    echo "run-demo: $BIN is missing; build it with 'make BUILD=$BUILD'" >&2
    exit 1
fi

# Generated once. Written next to its final place and renamed at the end, so
# an interrupted run never leaves a half-written model behind.
if [ ! -f "$DEMO/config.json" ]; then
    TOK=$(find node_modules/@lenml -name tokenizer.json -path '*deepseek*' 2>/dev/null | head -n 1)
    if [ -z "$TOK" ]; then
        echo "run-demo: the DeepSeek tokenizer is not under node_modules/@lenml; run scripts/install-deps.sh" >&2
        exit 1
    fi
    rm -rf "$DEMO.tmp"
    mkdir -p "$(dirname "$DEMO")"
    "$BIN" mkmodel --out "$DEMO.tmp" --preset demo --tokenizer "$(dirname "$TOK")"
    mv "$DEMO.tmp" "$DEMO"
fi

cat <<MSG

Serving the demo model on http://$HOST:$PORT (Ctrl-C stops it). Try, from another terminal:

  curl http://$HOST:$PORT/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "demo", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 32}'

  curl -N http://$HOST:$PORT/v1/completions -H 'Content-Type: application/json' \\
    -d '{"model": "demo", "prompt": "Once upon a time", "max_tokens": 32, "stream": true}'

(The weights are random: expect fluent-looking nonsense.)

MSG
exec "$BIN" serve --model "$DEMO" --served-model-name demo --host "$HOST" --port "$PORT" --backend "$BACKEND"
