/* Free lists of slots and blocks as stacks of ids. */
#include "engine/kv_cache.h"

#include <stdlib.h>

struct kv_cache {
    int32_t *free_blocks, *free_slots;
    int64_t n_free_blocks, n_free_slots;
    int64_t n_blocks, n_slots;
};

int kv_cache_create(int64_t n_blocks, int64_t n_slots, kv_cache **out, v4_err *err)
{
    *out = NULL;
    if (n_blocks < 1 || n_slots < 1 || n_blocks > INT32_MAX || n_slots > INT32_MAX)
        return v4_errf(err, "KV cache needs 1..2^31 blocks and slots (got %lld blocks, %lld slots)",
                       (long long)n_blocks, (long long)n_slots);
    kv_cache *c = calloc(1, sizeof *c);
    if (!c)
        return v4_errf(err, "out of memory");
    c->free_blocks = malloc((size_t)n_blocks * sizeof(int32_t));
    c->free_slots = malloc((size_t)n_slots * sizeof(int32_t));
    if (!c->free_blocks || !c->free_slots) {
        kv_cache_destroy(c);
        return v4_errf(err, "out of memory");
    }
    /* hand out low ids first */
    for (int64_t i = 0; i < n_blocks; i++)
        c->free_blocks[i] = (int32_t)(n_blocks - 1 - i);
    for (int64_t i = 0; i < n_slots; i++)
        c->free_slots[i] = (int32_t)(n_slots - 1 - i);
    c->n_free_blocks = c->n_blocks = n_blocks;
    c->n_free_slots = c->n_slots = n_slots;
    *out = c;
    return 0;
}

void kv_cache_destroy(kv_cache *c)
{
    if (!c)
        return;
    free(c->free_blocks);
    free(c->free_slots);
    free(c);
}

int32_t kv_slot_take(kv_cache *c) { return c->n_free_slots ? c->free_slots[--c->n_free_slots] : -1; }

void kv_slot_give(kv_cache *c, int32_t slot) { c->free_slots[c->n_free_slots++] = slot; }

int kv_blocks_grow(kv_cache *c, int32_t *table, int32_t *n, int32_t want)
{
    if (want <= *n)
        return 0;
    if (want - *n > c->n_free_blocks)
        return -1;
    while (*n < want)
        table[(*n)++] = c->free_blocks[--c->n_free_blocks];
    return 0;
}

void kv_blocks_give(kv_cache *c, int32_t *table, int32_t *n)
{
    while (*n > 0)
        c->free_blocks[c->n_free_blocks++] = table[--(*n)];
}

int64_t kv_blocks_free(const kv_cache *c) { return c->n_free_blocks; }
int64_t kv_blocks_total(const kv_cache *c) { return c->n_blocks; }
int64_t kv_slots_free(const kv_cache *c) { return c->n_free_slots; }
int64_t kv_slots_total(const kv_cache *c) { return c->n_slots; }
