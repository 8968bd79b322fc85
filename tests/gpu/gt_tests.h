/* The GPU tests (one function each; failures go through gt_fail). */
#ifndef V4_TESTS_GPU_GT_TESTS_H
#define V4_TESTS_GPU_GT_TESTS_H

void test_linear_formats(void);
void test_linear_real_dims(void);
void test_linear_fnuz(void);
void test_fp8_dialect_refused(void);
void test_embed(void);
void test_rmsnorm(void);
void test_rope(void);
void test_mhc(void);
void test_elementwise(void);
void test_moe_route(void);
void test_moe_experts_small(void);
void test_moe_experts_real_dims(void);
void test_moe_experts_gemv(void);
void test_sample(void);
void test_attn_state_quick(void);
void test_attn_state_quick_tc(void);
void test_attn_state_f32(void);
void test_attn_state_bf16(void);
void test_attn_state_fp8(void);
void test_attn_state_fnuz(void);
void test_graph_vs_eager(void);
void test_model_full_dims(void);
void test_tc_linear_formats(void);
void test_tc_linear_real_dims(void);
void test_tc_moe_formats(void);
void test_tc_moe_real_dims(void);
void test_tc_batch_invariance(void);
void test_blas_linear_formats(void);
void test_blas_linear_real_dims(void);
void test_fp8_linear(void);
void test_fp8_linear_real_dims(void);
void test_gemv_linear(void);
void test_gemv_linear_real_dims(void);

#endif
