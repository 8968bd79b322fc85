/* KV cache manager: the host-side bookkeeping of the state storage the
 * backend holds (engine/kv_layout.h). Slots (one per running sequence) and
 * blocks (KV_BLOCK_TOKENS tokens of compressed state each) come from free
 * lists preallocated at creation, so scheduling allocates nothing. */
#ifndef V4_ENGINE_KV_CACHE_H
#define V4_ENGINE_KV_CACHE_H

#include <stdint.h>

#include "util/err.h"

typedef struct kv_cache kv_cache;

int kv_cache_create(int64_t n_blocks, int64_t n_slots, kv_cache **out, v4_err *err);
void kv_cache_destroy(kv_cache *c);

/* A free slot id, or -1 when all are taken. */
int32_t kv_slot_take(kv_cache *c);
void kv_slot_give(kv_cache *c, int32_t slot);

/* Grows a block table from *n to `want` blocks. All or nothing: returns -1
 * and leaves the table as it was when the pool has too few free blocks. */
int kv_blocks_grow(kv_cache *c, int32_t *table, int32_t *n, int32_t want);
/* Returns every block of the table to the pool and sets *n to 0. */
void kv_blocks_give(kv_cache *c, int32_t *table, int32_t *n);

int64_t kv_blocks_free(const kv_cache *c);
int64_t kv_blocks_total(const kv_cache *c);
int64_t kv_slots_free(const kv_cache *c);
int64_t kv_slots_total(const kv_cache *c);

#endif
