/* Counter-based random numbers shared by host and device code: a draw is a
 * pure function of (seed, step), so sampling is reproducible across
 * backends, batch compositions and replays. splitmix64's finaliser. */
#ifndef V4_UTIL_RNG_H
#define V4_UTIL_RNG_H

#include <stdint.h>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define V4_HD __host__ __device__ __forceinline__
#else
#define V4_HD static inline
#endif

V4_HD uint64_t rng_mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Uniform in [0, 1) with 24 bits, exactly representable in fp32. */
V4_HD float rng_uniform(uint64_t seed, uint64_t step)
{
    return (float)(rng_mix64(seed ^ rng_mix64(step)) >> 40) * (1.0f / 16777216.0f);
}

#endif
