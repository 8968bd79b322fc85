/* Mixture of experts (MODEL.md 4.5) on the CPU: routing (learned with
 * sqrtsoftplus scores and a selection-only bias, or by token-id hash), then
 * the routed experts with tokens grouped per expert, so each expert's weights
 * are decoded once per step however many tokens chose it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"

static float sqrt_softplus(float x)
{
    float sp = x > 20.0f ? x : log1pf(expf(x));
    return sqrtf(sp);
}

void cpu_moe_route(v4_backend *be, int32_t *ids, float *w, const float *logits, const float *bias,
                   const v4_mat *tid2eid, const v4_step *st, int n_experts, int k, float route_scale)
{
    for (int t = 0; t < st->n_tokens; t++) {
        const float *l = logits + (int64_t)t * n_experts;
        int32_t *id = ids + (int64_t)t * k;
        float *wt = w + (int64_t)t * k;
        if (bias) {
            /* top-k of score + bias; ties to the lower expert id */
            bool taken[V4_MAX_EXPERTS] = {false};
            for (int j = 0; j < k; j++) {
                int best = -1;
                float bv = 0;
                for (int e = 0; e < n_experts; e++) {
                    if (taken[e])
                        continue;
                    float v = sqrt_softplus(l[e]) + bias[e];
                    if (best < 0 || v > bv) {
                        best = e;
                        bv = v;
                    }
                }
                taken[best] = true;
                id[j] = best;
            }
        } else {
            const int32_t tok = st->tok_id[t];
            for (int j = 0; j < k; j++) {
                if (tid2eid->dtype == DT_I64)
                    id[j] = (int32_t)((const int64_t *)tid2eid->data)[(int64_t)tok * tid2eid->cols + j];
                else
                    id[j] = ((const int32_t *)tid2eid->data)[(int64_t)tok * tid2eid->cols + j];
                if (id[j] < 0 || id[j] >= n_experts)
                    id[j] = 0; /* validated at load; keeps a corrupt table from reading out of bounds */
            }
        }
        float sum = 0;
        for (int j = 0; j < k; j++)
            sum += (wt[j] = sqrt_softplus(l[id[j]]));
        for (int j = 0; j < k; j++)
            wt[j] = wt[j] / (sum + 1e-20f) * route_scale;
    }
}

void cpu_moe_experts(v4_backend *be, float *y, const float *x, const int32_t *ids, const float *w, int n, int k,
                     const v4_mat *w1, const v4_mat *w2, const v4_mat *w3, float limit, float *scratch)
{
    const int64_t D = w1->cols, I = w1->rows;
    /* scratch: per (token, choice) outputs, then one expert's gathered rows */
    const int64_t pairs = (int64_t)n * k;
    float *buf = scratch;
    float *ybuf = buf, *xe = ybuf + pairs * D, *ge = xe + pairs * D, *ue = ge + pairs * I, *he = ue + pairs * I;
    int32_t *who = (int32_t *)(he + pairs * I);
    int64_t n_exp = 0;
    for (int64_t p = 0; p < pairs; p++)
        if (ids[p] + 1 > n_exp)
            n_exp = ids[p] + 1;
    for (int64_t e = 0; e < n_exp; e++) {
        int cnt = 0;
        for (int64_t p = 0; p < pairs; p++) {
            if (ids[p] == e) {
                who[cnt] = (int32_t)p;
                memcpy(xe + (int64_t)cnt * D, x + (p / k) * D, (size_t)D * sizeof(float));
                cnt++;
            }
        }
        if (!cnt)
            continue;
        cpu_linear(be, ge, xe, cnt, &w1[e], 1);
        cpu_linear(be, ue, xe, cnt, &w3[e], 1);
        cpu_swiglu(be, he, ge, ue, (int64_t)cnt * I, limit);
        cpu_linear(be, xe, he, cnt, &w2[e], 1);
        for (int r = 0; r < cnt; r++)
            memcpy(ybuf + (int64_t)who[r] * D, xe + (int64_t)r * D, (size_t)D * sizeof(float));
    }
    for (int t = 0; t < n; t++) {
        float *yt = y + (int64_t)t * D;
        memset(yt, 0, (size_t)D * sizeof(float));
        for (int j = 0; j < k; j++) {
            const float wj = w[(int64_t)t * k + j], *src = ybuf + ((int64_t)t * k + j) * D;
            for (int64_t i = 0; i < D; i++)
                yt[i] += wj * src[i];
        }
    }
}
