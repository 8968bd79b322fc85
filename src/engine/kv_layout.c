/* KV geometry; see kv_layout.h. */
#include "engine/kv_layout.h"

#include <string.h>

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

int kv_geom_init(kv_geom *g, const v4_config *c, int64_t n_blocks, int64_t n_slots, int64_t max_context,
                 v4_err *err)
{
    memset(g, 0, sizeof *g);
    int64_t bt = KV_BLOCK_TOKENS;
    for (int l = 0; l < c->n_layers; l++) {
        int r = c->compress_ratio[l];
        if (r > 0)
            bt = bt / gcd64(bt, r) * r; /* lcm: every ratio divides a block */
        if (bt > KV_MAX_BLOCK_TOKENS)
            return v4_errf(err, "compress ratios %d.. need blocks of more than %d tokens", r, KV_MAX_BLOCK_TOKENS);
    }
    if (n_blocks < 0 || n_slots < 1 || max_context < 1)
        return v4_errf(err, "KV pool needs at least one slot and a positive context (got %lld slots, %lld tokens)",
                       (long long)n_slots, (long long)max_context);
    g->n_layers = (int)c->n_layers;
    g->block_tokens = (int)bt;
    g->window = c->window;
    g->n_blocks = n_blocks;
    g->n_slots = n_slots;
    g->max_blocks_per_seq = (max_context + bt - 1) / bt;
    for (int l = 0; l < c->n_layers; l++) {
        kv_layer_geom *lg = &g->layer[l];
        lg->kind = cfg_layer_kind(c, l);
        lg->ratio = cfg_layer_ratio(c, l);
        lg->head = c->head_dim;
        if (lg->kind != LAYER_SLIDING) {
            lg->entries_per_block = (int)(bt / lg->ratio);
            lg->n_acc = lg->kind == LAYER_CSA ? 2 : 1;
        }
        if (lg->kind == LAYER_CSA)
            lg->idx_head = c->index_head_dim;
    }
    return 0;
}

int64_t kv_layer_block_elems(const kv_geom *g, int l)
{
    const kv_layer_geom *lg = &g->layer[l];
    return (int64_t)lg->entries_per_block * (lg->head + lg->idx_head);
}

int64_t kv_block_elems(const kv_geom *g)
{
    int64_t n = 0;
    for (int l = 0; l < g->n_layers; l++)
        n += kv_layer_block_elems(g, l);
    return n;
}

int64_t kv_slot_elems(const kv_geom *g)
{
    int64_t n = 0;
    for (int l = 0; l < g->n_layers; l++) {
        const kv_layer_geom *lg = &g->layer[l];
        n += g->window * lg->head;
        n += (int64_t)lg->n_acc * KV_ACC_FIELDS * (lg->head + lg->idx_head);
    }
    return n;
}
