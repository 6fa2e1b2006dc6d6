// The machine's limits that BENCHMARKS.md compares the kernels against: core clock, fp32
// FMA peak, bfloat16 dot-product peak and memory read bandwidth, each with the thread
// count the benchmarks use.
//
//     g++ -O3 -std=c++17 -pthread benchmarks/roofline.cpp -o /tmp/roofline && /tmp/roofline [threads]
//
// Each figure is the best of five runs: on a shared machine the best run is the one
// least disturbed by other work. Needs x86-64 with AVX-512F for the FMA peak (the kernels'
// fastest path); the bandwidth and clock figures need only AVX2.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

// Runs body(thread_index) on `threads` threads at once; returns the wall time.
template <class Body>
double run_threads(int threads, Body body) {
    const auto start = Clock::now();
    std::vector<std::thread> pool;
    for (int i = 1; i < threads; ++i) pool.emplace_back(body, i);
    body(0);
    for (auto& t : pool) t.join();
    return seconds_since(start);
}

template <class Measure>
double best_of_five(Measure measure) {
    double best = 0;
    for (int i = 0; i < 5; ++i) best = std::max(best, measure());
    return best;
}

// 24 independent FMA chains: enough to cover 2 FMA pipes x 4 cycles of latency.
__attribute__((target("avx512f"))) float fma_chains(long iterations) {
    __m512 acc[24];
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_ps(float(i));
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (long n = 0; n < iterations; ++n) {
#pragma GCC unroll 24
        for (int i = 0; i < 24; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    }
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, acc[0]);
    for (int i = 1; i < 24; ++i) _mm512_store_ps(lanes, _mm512_add_ps(_mm512_load_ps(lanes), acc[i]));
    return lanes[0];  // keeps every chain live
}

// The same with vdpbf16ps (AVX512-BF16): each instruction does 32 multiply-adds of
// bfloat16 pairs into 16 float32 lanes, the bfloat16 screen's whole arithmetic.
__attribute__((target("avx512f,avx512bf16"))) float bf16_dot_chains(long iterations) {
    __m512 acc[24];
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_ps(float(i));
    const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3F80), b = (__m512bh)_mm512_set1_epi16(0x3380);
    for (long n = 0; n < iterations; ++n) {
#pragma GCC unroll 24
        for (int i = 0; i < 24; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
    }
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, acc[0]);
    for (int i = 1; i < 24; ++i) _mm512_store_ps(lanes, _mm512_add_ps(_mm512_load_ps(lanes), acc[i]));
    return lanes[0];
}

// Sums n floats (a multiple of 32) with four independent accumulators.
__attribute__((target("avx2"))) float sum_floats(const float* p, std::size_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (std::size_t i = 0; i < n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    float total = 0;
    for (float v : lanes) total += v;
    return total;
}

}  // namespace

int main(int argc, char** argv) {
    const int threads = argc > 1 ? std::atoi(argv[1]) : 2;

    const double ghz = best_of_five([] {  // one dependent add retires per cycle
        const long n = 1'000'000'000L;
        long x = 0;
        const auto start = Clock::now();
        for (long i = 0; i < n; ++i) __asm__ volatile("add $1, %0" : "+r"(x));
        return n / seconds_since(start) / 1e9;
    });
    std::printf("clock, 1 thread: %.2f GHz\n", ghz);

    // Each chains call runs `iterations` x 24 instructions of `flops_per_instruction`.
    const auto report_peak = [&](const char* name, bool supported, float (*chains)(long),
                                 double flops_per_instruction) {
        if (!supported) return std::printf("%s peak: skipped, not supported here\n", name), void();
        const long iterations = 100'000'000L;
        const double gflops = best_of_five([&] {
            volatile float sink = 0;
            const double s = run_threads(threads, [&](int) { sink = chains(iterations); });
            return threads * iterations * 24 * flops_per_instruction / s / 1e9;
        });
        std::printf("%s peak, %d threads: %.1f GFLOP/s (%.1f flop/cycle/thread)\n", name,
                    threads, gflops, gflops / threads / ghz);
    };
    report_peak("fp32 AVX-512 FMA", __builtin_cpu_supports("avx512f"), &fma_chains, 2.0 * 16);
    report_peak("bf16 vdpbf16ps", __builtin_cpu_supports("avx512bf16"), &bf16_dot_chains, 2.0 * 32);

    // 1 GiB is memory-resident on any machine; 8 MiB fits a usual L3.
    for (std::size_t bytes : {std::size_t(1) << 30, std::size_t(8) << 20}) {
        const std::size_t n = bytes / sizeof(float), share = n / threads / 32 * 32;
        float* data = static_cast<float*>(std::aligned_alloc(64, bytes));
        std::fill(data, data + n, 1.0f);  // first touch before timing
        const int passes = bytes >= (std::size_t(1) << 30) ? 4 : 200;
        const double gbs = best_of_five([&] {
            volatile float sink = 0;
            const double s = run_threads(threads, [&](int t) {
                float total = 0;
                for (int pass = 0; pass < passes; ++pass) {
                    total += sum_floats(data + t * share, share);
                    __asm__ volatile("" ::: "memory");  // every pass really reads again
                }
                sink = total;
            });
            return double(share) * threads * sizeof(float) * passes / s / 1e9;
        });
        std::printf("read bandwidth, %d threads, %zu MiB: %.1f GB/s\n", threads, bytes >> 20, gbs);
        std::free(data);
    }
}
