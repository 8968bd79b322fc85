#!/bin/sh
# call 3 (the final code: score split on block barriers)
tar -xJf .device/bins.tar.xz && OUT=$OUT CHUNK=8192 GPU_TESTS_SKIP=tc_linear_real_dims,blas_linear_real_dims,gemv_linear_real_dims,tc_moe_real_dims RUN_S=260 BENCH_S=130 sh scripts/device-session.sh
