/* Deterministic random checkpoints in the official DeepSeek-V4-Flash format
 * (MODEL.md sections 1-2): config.json, sharded model-0000i-of-0000n
 * .safetensors files and model.safetensors.index.json, from a tiny test
 * model up to the full Flash dimensions.
 *
 * The checkpoint is streamed: each tensor is generated in chunks by worker
 * threads and written in order, so a 155 GB model needs a few hundred MB of
 * memory. Every byte is a pure function of (seed, tensor name, position), so
 * the output is identical for any thread count or chunking, and a tensor
 * keeps its values when --layers or --experts changes the rest. */
#ifndef V4_TOOLS_MKMODEL_H
#define V4_TOOLS_MKMODEL_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* Shards hold at most this many data bytes unless told otherwise. */
#define MK_DEFAULT_SHARD_BYTES 4000000000ull

/* Called by the writing thread after each chunk (done and total data bytes). */
typedef void (*mk_progress_fn)(void *ctx, uint64_t done_bytes, uint64_t total_bytes);

typedef struct mk_options {
    const char *preset;        /* "tiny", "demo" or "flash" */
    int layers;                /* > 0: keep the first N layers of the preset's schedule */
    int experts;               /* > 0: n_routed_experts (top-k capped at it) */
    uint64_t seed;
    const char *out_dir;       /* created (with parents) when absent */
    const char *tokenizer_dir; /* copy tokenizer.json (+ tokenizer_config.json) from it; NULL: none */
    int threads;               /* generator threads; 0: one per online CPU */
    uint64_t shard_bytes;      /* 0: MK_DEFAULT_SHARD_BYTES */
    mk_progress_fn progress;   /* may be NULL */
    void *progress_ctx;
} mk_options;

typedef struct mk_summary {
    uint64_t bytes; /* tensor data bytes (the index's metadata.total_size) */
    size_t tensors;
    int shards;
    int layers;
} mk_summary;

/* The names of the presets, for help texts. */
extern const char *const MK_PRESETS[];

/* The config.json text the options give (malloc'd), already checked with
 * cfg_parse. Fails for an unknown preset or out-of-range overrides. */
int mk_config_json(const mk_options *o, char **json_out, v4_err *err);
/* What mk_write would write, without writing anything. */
int mk_plan_size(const mk_options *o, mk_summary *s, v4_err *err);
/* Writes the checkpoint into o->out_dir. */
int mk_write(const mk_options *o, mk_summary *s, v4_err *err);

#endif
