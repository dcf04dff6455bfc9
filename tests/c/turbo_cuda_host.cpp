// The turbo KV types' CUDA block code (ggml-cuda/turbo.cuh, patches 0028, 0031 and 0044) compiled
// for the host and checked against ggml-base's CPU reference, so that CI, which has no GPU, runs
// it. CMake copies turbo.cuh without its include of common.cuh (turbo_cuh_host.inc); the CUDA
// intrinsics it uses are defined below, and a warp is 32 threads meeting at a barrier for every
// shuffle, lane i in thread i. Checked on Gaussian blocks and on two-humped ones (one strong
// channel, which the rotation spreads over the block as +-a):
//   - the one-thread quantizer (cpy) stores every block bit for bit as the CPU does, both codebooks;
//   - the warp quantizer (set_rows) sums in another order: a block whose two best candidates tie
//     may store the other, so its reconstruction error is compared, not its bytes;
//   - both decoders (one thread, a warp) read every block bit for bit as the CPU does;
//   - the even codebook (d < 0) is taken by two-humped blocks (most of them for turbo4 and turbo3;
//     turbo2's Lloyd-Max levels are nearly even already, 1 : 3.34), so its paths run.
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "ggml.h"
#define GGML_COMMON_DECL_CPP
#define GGML_COMMON_IMPL_CPP
#include "ggml-common.h"

extern "C" {
void quantize_row_turbo2_0_ref(const float * x, block_turbo2_0 * y, int64_t k);
void quantize_row_turbo3_0_ref(const float * x, block_turbo3_0 * y, int64_t k);
void quantize_row_turbo4_0_ref(const float * x, block_turbo4_0 * y, int64_t k);
void dequantize_row_turbo2_0(const block_turbo2_0 * x, float * y, int64_t k);
void dequantize_row_turbo3_0(const block_turbo3_0 * x, float * y, int64_t k);
void dequantize_row_turbo4_0(const block_turbo4_0 * x, float * y, int64_t k);
}

#define __device__
#define __host__
#define __forceinline__ inline

// correctly rounded float operations, as the _rn intrinsics are (volatile: no contraction)
static inline float __fadd_rn(float a, float b) {
    volatile float r = a + b;
    return r;
}

static inline float __fsub_rn(float a, float b) {
    volatile float r = a - b;
    return r;
}

static inline float __fmul_rn(float a, float b) {
    volatile float r = a * b;
    return r;
}

static inline float __fdiv_rn(float a, float b) {
    volatile float r = a / b;
    return r;
}

static inline float __fsqrt_rn(float a) {
    return std::sqrt(a);
}

static inline ggml_half __float2half(float f) {
    return ggml_fp32_to_fp16(f);
}

static inline float __half2float(ggml_half h) {
    return ggml_fp16_to_fp32(h);
}

// One warp: its lanes' exchange slots and the barrier they meet at.
struct warp {
    std::barrier<> sync{32};
    float          f[32];
    int            i[32];
    uint32_t       u[32];
};

static warp *           g_warp = nullptr;
static thread_local int t_lane = 0;

template <typename T>
static T exchange(T * slots, T v, int src) {
    slots[t_lane] = v;
    g_warp->sync.arrive_and_wait();
    const T r = slots[src];
    g_warp->sync.arrive_and_wait();
    return r;
}

static inline float __shfl_xor_sync(unsigned, float v, int offset, int = 32) {
    return exchange(g_warp->f, v, t_lane ^ offset);
}

static inline int __shfl_down_sync(unsigned, int v, int offset, int width = 32) {
    const int src = t_lane + offset;
    return exchange(g_warp->i, v, src < width ? src : t_lane);
}

static inline uint32_t __ballot_sync(unsigned, int pred) {
    g_warp->u[t_lane] = pred ? 1u << t_lane : 0u;
    g_warp->sync.arrive_and_wait();
    uint32_t r = 0;
    for (uint32_t bits : g_warp->u) {
        r |= bits;
    }
    g_warp->sync.arrive_and_wait();
    return r;
}

// as ggml-cuda/common.cuh: a butterfly over the lanes
static inline float warp_reduce_sum(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        x += __shfl_xor_sync(0xffffffff, x, offset, 32);
    }
    return x;
}

static inline float warp_reduce_max(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, offset, 32));
    }
    return x;
}

#include "turbo_cuh_host.inc"

// runs lane(l) on 32 threads as one warp
static void run_warp(const std::function<void(int)> & lane) {
    warp                     w;
    std::vector<std::thread> threads;
    g_warp = &w;
    for (int l = 0; l < 32; ++l) {
        threads.emplace_back([&lane, l] {
            t_lane = l;
            lane(l);
        });
    }
    for (std::thread & t : threads) {
        t.join();
    }
    g_warp = nullptr;
}

static double sq_err(const float * a, const float * b) {
    double s = 0.0;
    for (int i = 0; i < QK_TURBO; ++i) {
        s += double(a[i] - b[i]) * double(a[i] - b[i]);
    }
    return s;
}

template <ggml_type type, typename block_t>
static int check(const char * name, void (*ref_quantize)(const float *, block_t *, int64_t),
                 void (*ref_dequantize)(const block_t *, float *, int64_t), double min_even_share) {
    const int                       nb = 256;  // the odd blocks two-humped
    std::mt19937                    rng(7);
    std::normal_distribution<float> gauss(0.0f, 1.0f);
    std::vector<float>              x(QK_TURBO * nb);
    for (int b = 0; b < nb; ++b) {
        for (int i = 0; i < QK_TURBO; ++i) {
            x[QK_TURBO * b + i] = gauss(rng);
        }
        if (b % 2) {
            x[QK_TURBO * b + b % QK_TURBO] = b % 4 == 1 ? 50.0f : -30.0f;
        }
    }
    std::memset(x.data() + QK_TURBO * 10, 0, QK_TURBO * sizeof(float));  // an all-zero block

    std::vector<block_t> ref(nb), one(nb), lanes(nb);
    ref_quantize(x.data(), ref.data(), QK_TURBO * nb);
    for (int b = 0; b < nb; ++b) {
        quantize_f32_turbo_block<type>(x.data() + QK_TURBO * b, &one[b]);
    }
    run_warp([&](int l) {
        for (int b = 0; b < nb; ++b) {
            quantize_f32_turbo_block_warp<type>(x.data() + QK_TURBO * b, &lanes[b], l);
        }
    });
    std::vector<float> ref_out(QK_TURBO * nb), thread_out(QK_TURBO * nb), lane_out(QK_TURBO * nb);
    ref_dequantize(ref.data(), ref_out.data(), QK_TURBO * nb);
    for (int b = 0; b < nb; ++b) {
        dequantize_turbo_block<type>(&ref[b], thread_out.data() + QK_TURBO * b);
    }
    run_warp([&](int l) {
        for (int b = 0; b < nb; ++b) {
            lane_out[QK_TURBO * b + l] = dequantize_turbo_lane<type>(&ref[b], l);
        }
    });

    int    failures = 0, n_even = 0, n_even_humped = 0, n_lanes_differ = 0;
    double err_ref = 0.0, err_lanes = 0.0;
    for (int b = 0; b < nb; ++b) {
        const bool even = (ref[b].d & 0x8000) != 0;
        n_even += even;
        n_even_humped += even && b % 2;
        if (std::memcmp(&ref[b], &one[b], sizeof(block_t)) != 0) {
            fprintf(stderr, "%s: block %d: the one-thread quantizer stores other bytes than the CPU\n", name, b);
            failures++;
        }
        float lanes_out[QK_TURBO];
        ref_dequantize(&lanes[b], lanes_out, QK_TURBO);
        n_lanes_differ += std::memcmp(&ref[b], &lanes[b], sizeof(block_t)) != 0;
        err_ref += sq_err(ref_out.data() + QK_TURBO * b, x.data() + QK_TURBO * b);
        err_lanes += sq_err(lanes_out, x.data() + QK_TURBO * b);
    }
    if (std::memcmp(ref_out.data(), thread_out.data(), ref_out.size() * sizeof(float)) != 0 ||
        std::memcmp(ref_out.data(), lane_out.data(), ref_out.size() * sizeof(float)) != 0) {
        fprintf(stderr, "%s: a CUDA decoder reads other values than the CPU\n", name);
        failures++;
    }
    if (!(err_lanes <= 1.001 * err_ref)) {
        fprintf(stderr, "%s: the warp quantizer's squared error %g against the CPU's %g\n", name, err_lanes, err_ref);
        failures++;
    }
    if (n_even_humped < min_even_share * (nb / 2)) {
        fprintf(stderr, "%s: only %d of %d two-humped blocks on the even codebook\n", name, n_even_humped, nb / 2);
        failures++;
    }
    printf(
        "%s: %d blocks, %d on the even codebook (%d two-humped); the warp quantizer stored %d otherwise "
        "(squared error %.4f against %.4f)\n",
        name, nb, n_even, n_even_humped, n_lanes_differ, err_lanes, err_ref);
    return failures;
}

int main() {
    int failures = 0;
    // measured: 128, 126 and 50 of the 128 two-humped blocks on the even codebook
    failures +=
        check<GGML_TYPE_TURBO4_0, block_turbo4_0>("turbo4", quantize_row_turbo4_0_ref, dequantize_row_turbo4_0, 0.75);
    failures +=
        check<GGML_TYPE_TURBO3_0, block_turbo3_0>("turbo3", quantize_row_turbo3_0_ref, dequantize_row_turbo3_0, 0.75);
    failures +=
        check<GGML_TYPE_TURBO2_0, block_turbo2_0>("turbo2", quantize_row_turbo2_0_ref, dequantize_row_turbo2_0, 0.1);
    if (failures) {
        fprintf(stderr, "turbo_cuda_host: %d failures\n", failures);
        return 1;
    }
    printf("turbo_cuda_host: ok\n");
    return 0;
}
