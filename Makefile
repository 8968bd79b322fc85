# v4serve build. Plain targets: make, make test, make run, make asan,
# make cuda, make hip-check, make hip, make bench. Sources are found by
# wildcard, so a new .c file under src/ joins the library and a new
# tests/test_*.c becomes a test program without editing this file.

CC      ?= cc
CFLAGS  ?= -O2 -g
override CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -pthread -Isrc -MMD -MP
override LDLIBS += -ljansson -lmicrohttpd -lpcre2-8 -lm -pthread
BUILD   ?= build

DEPS_STAMP := $(BUILD)/.deps-installed

LIB_SRC  := $(shell find src -name '*.c' -not -path 'src/cli/*' | sort)
CLI_SRC  := $(wildcard src/cli/*.c)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_HELPERS := $(filter-out tests/test_%.c,$(wildcard tests/*.c))

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_HELPER_OBJ := $(TEST_HELPERS:%.c=$(BUILD)/obj/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

LIB := $(BUILD)/libv4serve.a
BIN := $(BUILD)/v4serve

.PHONY: all deps test run asan bench clean
# keep test objects between runs (they are intermediate files to make)
.SECONDARY:
all: $(BIN)

# System packages come from scripts/install-deps.sh (idempotent); the stamp
# keeps it from running on every build.
deps: $(DEPS_STAMP)
$(DEPS_STAMP): scripts/install-deps.sh package-lock.json
	@mkdir -p $(BUILD)
	./scripts/install-deps.sh
	@touch $@

$(BUILD)/obj/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BIN): $(CLI_OBJ) $(LIB)
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(LIB) $(LDFLAGS) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(TEST_HELPER_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(TEST_HELPER_OBJ) $(LIB) $(LDFLAGS) $(WRAP_LDFLAGS) $(LDLIBS) -lcmocka

# The allocation-counting test wraps the allocator for the library it links.
$(BUILD)/tests/test_engine_alloc: WRAP_LDFLAGS = -Wl,--wrap=malloc -Wl,--wrap=calloc -Wl,--wrap=realloc \
	-Wl,--wrap=posix_memalign -Wl,--wrap=aligned_alloc

# Builds everything and runs every test program; the runner prints
# "N passed, N failed" over all of them.
test: $(BIN) $(TEST_BIN)
	./scripts/run-tests.sh $(BUILD)

# The same tests under AddressSanitizer + UndefinedBehaviorSanitizer.
asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" LDFLAGS="-fsanitize=address,undefined" test

# Benchmarks: `v4serve bench` (in the CLI) and the CPU forward benchmark.
bench: $(BIN) $(BUILD)/bench/cpu_forward
	@echo "built: $(BIN) bench --help; $(BUILD)/bench/cpu_forward (bench/cpu_forward.sh runs it); GPU: make cuda, then scripts/device-bench.sh"

$(BUILD)/bench/cpu_forward: bench/cpu_forward.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS)

run: $(BIN)
	./scripts/run-demo.sh $(BUILD)

clean:
	rm -rf build build-asan

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_BIN:$(BUILD)/tests/%=$(BUILD)/obj/tests/%.d)

# ---- CUDA backend (NVIDIA Hopper, sm_90a) -----------------------------------
# `make cuda` builds build-cuda/v4serve (the CLI with the CUDA backend) and
# build-cuda/gpu-tests (tests/gpu/, one TAP program); `make gpu-test` builds
# and runs them (needs a GPU; scripts/device-run.sh runs the whole device
# check). Host C files are compiled with -DV4_HAVE_CUDA into build-cuda, the
# kernels (src/backend/cuda/*.cu) by nvcc; cudart is linked statically.
CUDA_HOME  ?= /usr/local/cuda
NVCC       ?= $(CUDA_HOME)/bin/nvcc
CUDA_BUILD := build-cuda
NVCCFLAGS  ?= -O2 -g -lineinfo
NVCCFLAGS  += -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xcompiler -Wall -Isrc -MMD -MP
CUDA_LDLIBS := -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lpthread -lstdc++

CU_SRC       := $(wildcard src/backend/cuda/*.cu)
CU_OBJ       := $(CU_SRC:%.cu=$(CUDA_BUILD)/obj/%.o)
CUDA_LIB_OBJ := $(LIB_SRC:%.c=$(CUDA_BUILD)/obj/%.o)
CUDA_CLI_OBJ := $(CLI_SRC:%.c=$(CUDA_BUILD)/obj/%.o)
GPU_TEST_OBJ := $(patsubst %.c,$(CUDA_BUILD)/obj/%.o,$(wildcard tests/gpu/*.c) tests/testutil.c)
CUDA_LIB     := $(CUDA_BUILD)/libv4serve.a

.PHONY: cuda gpu-test
cuda: $(CUDA_BUILD)/v4serve $(CUDA_BUILD)/gpu-tests

gpu-test: cuda
	V4_ROOT=$(CURDIR) ./$(CUDA_BUILD)/gpu-tests

$(CUDA_BUILD)/obj/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DV4_HAVE_CUDA -Itests -c $< -o $@

$(CUDA_BUILD)/obj/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(CUDA_LIB): $(CUDA_LIB_OBJ) $(CU_OBJ)
	rm -f $@ && ar rcs $@ $^

$(CUDA_BUILD)/v4serve: $(CUDA_CLI_OBJ) $(CUDA_LIB)
	$(CC) $(CFLAGS) -o $@ $(CUDA_CLI_OBJ) $(CUDA_LIB) $(LDFLAGS) $(LDLIBS) $(CUDA_LDLIBS)

$(CUDA_BUILD)/gpu-tests: $(GPU_TEST_OBJ) $(CUDA_LIB)
	$(CC) $(CFLAGS) -o $@ $(GPU_TEST_OBJ) $(CUDA_LIB) $(LDFLAGS) $(LDLIBS) $(CUDA_LDLIBS)

-include $(CUDA_LIB_OBJ:.o=.d) $(CUDA_CLI_OBJ:.o=.d) $(CU_OBJ:.o=.d) $(GPU_TEST_OBJ:.o=.d)

# ---- HIP (AMD MI300X, gfx942) ------------------------------------------------
# The kernel sources are also HIP sources (src/backend/gpu.h). `make
# hip-check` compiles the device code of each one meant for HIP with
# Debian's clang and HIP headers, for gfx942, into build-hip/<name>.s (no
# AMD GPU needed: nothing runs) and fails on any error or when the output is
# not gfx942 code. The NVIDIA-only fast paths (tensor-core GEMM and
# attention: mma.sync, ldmatrix, cp.async; the cuBLASLt linear layers) are
# not HIP sources. HIP marks hipError_t nodiscard; cleanup paths ignore it
# as they do on CUDA. clang
# reports `#pragma unroll` loops that leave early (mhc.cu) as not unrolled.
HIP_CLANG   ?= clang++-19
HIP_ARCH    ?= gfx942
HIP_BUILD   ?= build-hip
HIP_EXCLUDE := src/backend/cuda/gemm_tc.cu src/backend/cuda/attention_tc.cu src/backend/cuda/indexer_tc.cu src/backend/cuda/mhc_tc.cu src/backend/cuda/blas.cu src/backend/cuda/fp8_quant.cu
HIP_SRC     := $(filter-out $(HIP_EXCLUDE),$(CU_SRC))
HIP_ASM     := $(HIP_SRC:src/backend/cuda/%.cu=$(HIP_BUILD)/%.s)
HIP_CHECK_FLAGS ?= -O2
HIP_CHECK_FLAGS += -x hip --offload-arch=$(HIP_ARCH) --cuda-device-only -nogpulib --rocm-path=/usr -std=c++17 \
	-Wall -Wno-unused-function -Wno-unused-result -Wno-pass-failed -Isrc

.PHONY: hip-check
hip-check: $(HIP_ASM)
	@echo "hip-check: $(words $(HIP_ASM)) kernel sources compile for $(HIP_ARCH)"

$(HIP_BUILD)/%.s: src/backend/cuda/%.cu | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(HIP_CLANG) $(HIP_CHECK_FLAGS) -MMD -MP -MF $(@:.s=.d) -MT $@ -S $< -o $@.tmp
	@grep -q 'amdgcn-amd-amdhsa--$(HIP_ARCH)' $@.tmp || { echo "$<: no $(HIP_ARCH) code in the output"; exit 1; }
	@mv $@.tmp $@

-include $(HIP_ASM:.s=.d)

# `make hip` (best effort: built and run on no AMD machine yet; docs/AMD.md):
# build-hip/v4serve and build-hip/gpu-tests with the GPU backend compiled as
# HIP by ROCm's hipcc (ROCm 6.x) for $(HIP_ARCH), the host C files as for
# `make cuda`, linked with libamdhip64.
ROCM_PATH ?= /opt/rocm
HIPCC     ?= $(ROCM_PATH)/bin/hipcc
HIPFLAGS  ?= -O2 -g
HIPFLAGS  += -x hip -std=c++17 --offload-arch=$(HIP_ARCH) -Wall -Wno-unused-result -Isrc -MMD -MP
HIP_LDLIBS := -L$(ROCM_PATH)/lib -Wl,-rpath,$(ROCM_PATH)/lib -lamdhip64 -ldl -lrt -lpthread -lstdc++

HIP_CU_OBJ   := $(HIP_SRC:%.cu=$(HIP_BUILD)/obj/%.o)
HIP_LIB_OBJ  := $(LIB_SRC:%.c=$(HIP_BUILD)/obj/%.o)
HIP_CLI_OBJ  := $(CLI_SRC:%.c=$(HIP_BUILD)/obj/%.o)
HIP_TEST_OBJ := $(patsubst %.c,$(HIP_BUILD)/obj/%.o,$(wildcard tests/gpu/*.c) tests/testutil.c)
HIP_LIB      := $(HIP_BUILD)/libv4serve.a

.PHONY: hip
hip: $(HIP_BUILD)/v4serve $(HIP_BUILD)/gpu-tests

$(HIP_BUILD)/obj/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DV4_HAVE_CUDA -Itests -c $< -o $@

$(HIP_BUILD)/obj/%.o: %.cu
	@mkdir -p $(dir $@)
	$(HIPCC) $(HIPFLAGS) -c $< -o $@

$(HIP_LIB): $(HIP_LIB_OBJ) $(HIP_CU_OBJ)
	rm -f $@ && ar rcs $@ $^

$(HIP_BUILD)/v4serve: $(HIP_CLI_OBJ) $(HIP_LIB)
	$(CC) $(CFLAGS) -o $@ $(HIP_CLI_OBJ) $(HIP_LIB) $(LDFLAGS) $(LDLIBS) $(HIP_LDLIBS)

$(HIP_BUILD)/gpu-tests: $(HIP_TEST_OBJ) $(HIP_LIB)
	$(CC) $(CFLAGS) -o $@ $(HIP_TEST_OBJ) $(HIP_LIB) $(LDFLAGS) $(LDLIBS) $(HIP_LDLIBS)

-include $(HIP_LIB_OBJ:.o=.d) $(HIP_CLI_OBJ:.o=.d) $(HIP_CU_OBJ:.o=.d) $(HIP_TEST_OBJ:.o=.d)
