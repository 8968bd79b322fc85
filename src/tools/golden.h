/* Golden-vector check (tests/golden/README.md): feed a golden file's token
 * ids through the forward pass whole, in chunks, or token by token, and
 * compare the logits at every position and the greedy continuation. */
#ifndef V4_TOOLS_GOLDEN_H
#define V4_TOOLS_GOLDEN_H

#include <stdint.h>

#include "backend/backend.h"
#include "util/err.h"

typedef struct golden {
    void *archive;        /* st_archive holding the tensors */
    const int32_t *tokens;
    int64_t n_tokens;
    int64_t prompt_len;
    const float *logits;  /* [n_tokens][vocab] */
    int64_t vocab;
} golden;

int golden_load(const char *path, golden *g, v4_err *err);
void golden_free(golden *g);

typedef struct golden_result {
    double max_abs_diff;
    double max_abs_logit;
    double rel_err;       /* max_abs_diff / max_abs_logit */
    int64_t worst_pos;    /* position of the largest difference */
    int64_t greedy_match; /* argmax(logits[t]) == tokens[t+1] for t >= prompt_len-1 */
    int64_t greedy_total;
    /* Per position p: rel_p = max_v |diff| / max_abs_logit. rel_err is the
     * largest; these tell whether it comes from a few positions (a discrete
     * choice such as a top-k selection or an expert flipping) or from all. */
    int64_t positions;      /* n_tokens */
    int64_t positions_over; /* positions with rel_p > bound */
    double median_rel;      /* median of rel_p */
} golden_result;

/* chunk 0: whole sequence in one step; else steps of `chunk` tokens.
 * `bound` only sets which positions count in positions_over. */
int golden_run(const char *model_dir, v4_backend *be, const golden *g, int chunk, double bound, golden_result *r,
               v4_err *err);

#endif
