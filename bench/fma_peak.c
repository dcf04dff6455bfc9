/* The CPU's multiply-add peak per core, for the "how far from the hardware" lines of the CPU
 * benchmarks: 16 independent AVX-512 FMA chains in registers, no memory traffic.
 *
 *     gcc -O2 -mavx512f -o /tmp/fma_peak bench/fma_peak.c && /tmp/fma_peak
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

int main(void) {
    __m512       acc[16];
    const __m512 mul = _mm512_set1_ps(1.0000001f), add = _mm512_set1_ps(1e-9f);
    for (int i = 0; i < 16; ++i) {
        acc[i] = _mm512_set1_ps((float)i);
    }
    const long      n = 200000000;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long it = 0; it < n; ++it) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) {
            acc[i] = _mm512_fmadd_ps(acc[i], mul, add);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    float        sum     = 0.0f;  // keeps the loop
    for (int i = 0; i < 16; ++i) {
        sum += _mm512_reduce_add_ps(acc[i]);
    }
    printf("%.1f G multiply-adds/s on one core (16 lanes x 16 chains; checksum %g)\n", (double)n * 256 / seconds / 1e9,
           (double)sum);
    return 0;
}
