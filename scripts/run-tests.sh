#!/bin/sh
# Runs every test program in BUILD/tests (cmocka, TAP output), prints each
# failure, and ends with one summary line "N passed, N failed" that CI reads.
# Exit status is non-zero when any test failed or any program crashed.
set -u
BUILD=${1:-build}
cd "$(dirname "$0")/.." || exit 1
export CMOCKA_MESSAGE_OUTPUT=TAP
export V4_ROOT="$PWD"
passed=0
failed=0
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    out=$("$t" 2>&1)
    rc=$?
    p=$(printf '%s\n' "$out" | grep -c '^ok ')
    f=$(printf '%s\n' "$out" | grep -c '^not ok ')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1 # crashed or failed outside a test case
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$f" -ne 0 ]; then
        echo "FAIL $name (exit $rc)"
        printf '%s\n' "$out" | grep -v '^ok ' | sed 's/^/    /'
    else
        echo "ok   $name ($p tests)"
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
