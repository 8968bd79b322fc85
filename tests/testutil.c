/* Shared test helpers; see testutil.h. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *tu_root(void)
{
    const char *r = getenv("V4_ROOT");
    return r && *r ? r : ".";
}

const char *tu_path(const char *rel)
{
    static char bufs[8][4096];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", tu_root(), rel);
    return b;
}

const char *tu_golden(const char *name)
{
    static char b[4096];
    snprintf(b, sizeof b, "%s/tests/golden/%s", tu_root(), name);
    return b;
}

uint64_t tu_seed_from_time(const char *test_name)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t s = (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    const char *replay = getenv("V4_TEST_SEED"); /* replays a printed seed */
    if (replay && *replay)
        s = strtoull(replay, NULL, 10);
    if (!s)
        s = 1;
    fprintf(stderr, "# %s: seed %llu\n", test_name, (unsigned long long)s);
    return s;
}

uint64_t tu_next(tu_rng *r)
{
    uint64_t x = r->s ? r->s : 0x9E3779B97F4A7C15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

float tu_uniform(tu_rng *r, float lo, float hi)
{
    return lo + (hi - lo) * (float)((tu_next(r) >> 40) / (double)(1ull << 24));
}

float tu_normal(tu_rng *r)
{
    double u1 = ((tu_next(r) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (tu_next(r) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

const char *tu_tmpdir(void)
{
    static char b[256];
    snprintf(b, sizeof b, "/tmp/v4test.XXXXXX");
    return mkdtemp(b);
}
