/* Geometry of the per-sequence model state (MODEL.md sections 4.2-4.4, 5).
 *
 * Two kinds of storage, both preallocated:
 *  - slots: fixed-size state of one running sequence, per layer: the
 *    sliding-window ring (W entries of d channels) and, for compressed layers,
 *    the compressor accumulators (an online softmax per channel: running max,
 *    sum of weights, weighted sum; CSA keeps two, for the entry being closed
 *    and the next one, which is how the overlapping windows are carried).
 *  - blocks: one block holds the compressed state of KV_BLOCK_TOKENS tokens of
 *    context for every compressed layer: block_tokens/ratio compressed entries
 *    of d channels (and for CSA the indexer's keys of c channels). A sequence
 *    owns one block table; block j covers tokens [j*bt, (j+1)*bt).
 * The engine hands out slot and block ids; backends allocate the storage in
 * their own memory with this geometry. */
#ifndef V4_ENGINE_KV_LAYOUT_H
#define V4_ENGINE_KV_LAYOUT_H

#include <stdint.h>

#include "model/config.h"
#include "util/err.h"

#define KV_BLOCK_TOKENS 256
#define KV_MAX_BLOCK_TOKENS 8192

typedef struct kv_layer_geom {
    layer_kind_t kind;
    int ratio;             /* 0 for sliding layers */
    int entries_per_block; /* block_tokens / ratio (0 for sliding layers) */
    int64_t head;          /* d: channels of a window or compressed entry */
    int64_t idx_head;      /* c: channels of an indexer key (CSA), else 0 */
    int n_acc;             /* compressor accumulators: 2 for CSA, 1 for HCA, 0 */
} kv_layer_geom;

typedef struct kv_geom {
    int n_layers;
    int block_tokens;
    int64_t window;
    int64_t n_blocks;  /* blocks in the pool */
    int64_t n_slots;   /* running-sequence slots */
    int64_t max_blocks_per_seq; /* block-table length: ceil(max context / block_tokens) */
    kv_layer_geom layer[V4_MAX_LAYERS];
} kv_geom;

/* Floats of one compressor accumulator: running max, sum, weighted sum. */
#define KV_ACC_FIELDS 3

int kv_geom_init(kv_geom *g, const v4_config *c, int64_t n_blocks, int64_t n_slots, int64_t max_context,
                 v4_err *err);

/* Elements (channels) of one block for one layer: entries (and indexer keys). */
int64_t kv_layer_block_elems(const kv_geom *g, int layer);
/* Elements of all layers' compressed state per block (for memory budgets). */
int64_t kv_block_elems(const kv_geom *g);
/* Elements of one slot's fixed state for all layers (ring + accumulators). */
int64_t kv_slot_elems(const kv_geom *g);

#endif
