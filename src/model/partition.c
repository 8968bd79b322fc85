/* The several-GPU weight plan; see partition.h. */
#include "model/partition.h"

/* [begin, end) of the rank's share when n items split over world ranks in
 * contiguous blocks, the first n % world blocks one item larger. */
static void share(int64_t n, int world, int rank, int64_t *begin, int64_t *end)
{
    const int64_t base = n / world, extra = n % world;
    *begin = rank * base + (rank < extra ? rank : extra);
    *end = *begin + base + (rank < extra ? 1 : 0);
}

int partition_plan(const v4_config *c, int world, int rank, v4_partition *p, v4_err *err)
{
    if (world < 1 || world > V4_MAX_GPUS)
        return v4_errf(err, "%d GPUs: a host has 1 to %d", world, V4_MAX_GPUS);
    if (rank < 0 || rank >= world)
        return v4_errf(err, "rank %d of %d GPUs: ranks are 0 to %d", rank, world, world - 1);
    if (c->n_experts < world)
        return v4_errf(err, "%lld routed experts cannot cover %d GPUs (expert parallel needs one per GPU)",
                       (long long)c->n_experts, world);
    if (c->vocab_size < world)
        return v4_errf(err, "a vocabulary of %lld rows cannot split over %d GPUs", (long long)c->vocab_size, world);
    p->world = world;
    p->rank = rank;
    share(c->n_experts, world, rank, &p->expert_begin, &p->expert_end);
    share(c->vocab_size, world, rank, &p->vocab_begin, &p->vocab_end);
    return 0;
}

int partition_expert_rank(const v4_config *c, int world, int64_t e)
{
    const int64_t base = c->n_experts / world, extra = c->n_experts % world;
    const int64_t big = extra * (base + 1); /* experts in the larger blocks */
    return (int)(e < big ? e / (base + 1) : extra + (e - big) / base);
}

static int add_bytes(v4_mat *m, void *ctx, v4_err *err)
{
    *(size_t *)ctx += mat_bytes(m);
    return 0;
}

size_t partition_weight_bytes(v4_weights *w, const v4_partition *p)
{
    size_t all = 0;
    v4_err err;
    weights_visit(w, add_bytes, &all, &err);
    size_t not_here = 0;
    for (int L = 0; L < w->n_layers; L++) {
        const v4_layer_w *l = &w->layers[L];
        if (!l->exp_w1)
            continue;
        for (int64_t e = 0; l->exp_w1[e].data; e++)
            if (e < p->expert_begin || e >= p->expert_end)
                not_here += mat_bytes(&l->exp_w1[e]) + mat_bytes(&l->exp_w2[e]) + mat_bytes(&l->exp_w3[e]);
    }
    /* head rows are whole rows of codes; a block-scaled head's scale rows
     * split in the same proportion (rounding to the byte) */
    const double other_rows = (double)(w->head.rows - (p->vocab_end - p->vocab_begin));
    not_here += (size_t)((double)mat_bytes(&w->head) * other_rows / (double)w->head.rows + 0.5);
    return all - not_here;
}
