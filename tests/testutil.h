/* Shared helpers for test programs: where the repository and its test data
 * are, and fresh random inputs. */
#ifndef V4_TESTS_TESTUTIL_H
#define V4_TESTS_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* 1 in AddressSanitizer builds, where the heaviest tests run smaller cases
 * (the plain build runs the full ones): ASan makes the fp32 forward pass
 * 10-20x slower, and CI has 90 minutes for everything. */
#if defined(__SANITIZE_ADDRESS__)
#define TU_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TU_SANITIZED 1
#endif
#endif
#ifndef TU_SANITIZED
#define TU_SANITIZED 0
#endif

/* Repository root ($V4_ROOT, set by scripts/run-tests.sh, else "."). */
const char *tu_root(void);
/* Path under the repository root, in a static rotating buffer. */
const char *tu_path(const char *rel);
/* Golden model folder: tu_golden("tiny") -> ROOT/tests/golden/tiny */
const char *tu_golden(const char *name);

/* Deterministic xorshift generator for test inputs; seed it from the clock
 * (tu_seed_from_time) for fresh inputs each run, printing the seed;
 * V4_TEST_SEED=N replays a printed seed. */
typedef struct tu_rng {
    uint64_t s;
} tu_rng;
uint64_t tu_seed_from_time(const char *test_name);
uint64_t tu_next(tu_rng *r);
float tu_uniform(tu_rng *r, float lo, float hi);
float tu_normal(tu_rng *r);

/* Makes a fresh temporary directory and returns its path (static buffer). */
const char *tu_tmpdir(void);

#endif
