/* Steady-state engine steps allocate nothing. This program is linked with
 * -Wl,--wrap for the allocation functions (see the Makefile), so every
 * allocation the statically linked library makes passes through the
 * counters below. After warm-up (the first steps size the per-thread
 * scratch), a stretch of decode steps with sequences joining, finishing and
 * growing across blocks and compression windows must count zero; request
 * admission (eng_submit) is allowed to allocate and is kept outside. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "engine/engine.h"
#include "model/model.h"
#include "testutil.h"

static atomic_long allocs;
static atomic_bool counting;

void *__real_malloc(size_t n);
void *__real_calloc(size_t a, size_t b);
void *__real_realloc(void *p, size_t n);
int __real_posix_memalign(void **p, size_t al, size_t n);
void *__real_aligned_alloc(size_t al, size_t n);

static void count(void)
{
    if (atomic_load(&counting))
        atomic_fetch_add(&allocs, 1);
}

void *__wrap_malloc(size_t n)
{
    count();
    return __real_malloc(n);
}
void *__wrap_calloc(size_t a, size_t b)
{
    count();
    return __real_calloc(a, b);
}
void *__wrap_realloc(void *p, size_t n)
{
    count();
    return __real_realloc(p, n);
}
int __wrap_posix_memalign(void **p, size_t al, size_t n)
{
    count();
    return __real_posix_memalign(p, al, n);
}
void *__wrap_aligned_alloc(size_t al, size_t n)
{
    count();
    return __real_aligned_alloc(al, n);
}

static int on_token(void *u, int32_t t, const smp_result *r)
{
    (void)u, (void)t, (void)r;
    return 0;
}
static void on_finish(void *u, eng_finish why, const char *msg)
{
    (void)why, (void)msg;
    (*(int *)u)++;
}

static void test_steady_state_allocates_nothing(void **state)
{
    v4_err err;
    v4_backend *be;
    v4_model *m;
    char mpath[4096];
    snprintf(mpath, sizeof mpath, "%s/model", tu_golden("tiny"));
    assert_int_equal(backend_cpu_create(2, DT_F8_E4M3, &be, &err), 0);
    if (model_open(mpath, be, &m, &err))
        fail_msg("%s", err.msg);
    eng_config c = {.max_num_seqs = 8, .max_step_tokens = 64, .max_model_len = 1024};
    eng_engine *e;
    assert_int_equal(eng_create(m, &c, &e, &err), 0);
    int finished = 0;
    eng_callbacks cb = {.on_token = on_token, .on_finish = on_finish, .user = &finished};
    int32_t prompt[300];
    for (int i = 0; i < 300; i++)
        prompt[i] = (i * 131 + 7) % 1024;
    uint64_t id;
    eng_req_params p = {.sampling = smp_params_default(), .max_tokens = 400, .ignore_eos = true};
    p.sampling.temperature = 0.7f;
    /* warm-up: a long prompt (sizes every scratch for the longest step) */
    assert_int_equal(eng_submit(e, prompt, 300, &p, &cb, &id, &err), ENG_OK);
    for (int s = 0; s < 10; s++)
        assert_true(eng_step(e, &err) >= 0);
    /* more sequences join; admission may allocate, steps may not */
    for (int k = 0; k < 6; k++) {
        eng_req_params q = p;
        q.max_tokens = 30 + 25 * k;
        assert_int_equal(eng_submit(e, prompt + k, 40 + 30 * k, &q, &cb, &id, &err), ENG_OK);
    }
    assert_true(eng_step(e, &err) > 0); /* admits them */
    for (int s = 0; s < 5; s++)
        assert_true(eng_step(e, &err) > 0);
    atomic_store(&allocs, 0);
    atomic_store(&counting, true);
    int steps = 0;
    /* decode steps: sequences cross 256-token blocks and compression
     * windows, and several finish, inside the counted stretch */
    while (finished < 5 && steps < 400) {
        int r = eng_step(e, &err);
        assert_true(r > 0);
        steps++;
    }
    atomic_store(&counting, false);
    print_message("# %d steps counted, %d requests finished in them\n", steps, finished);
    assert_true(finished >= 5);
    assert_int_equal(atomic_load(&allocs), 0);
    eng_destroy(e);
    model_close(m);
    backend_cpu_destroy(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_steady_state_allocates_nothing)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
