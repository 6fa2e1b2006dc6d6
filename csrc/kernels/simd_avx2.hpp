// 8-lane AVX2 + FMA vectors. Included only by avx2.cpp (compiled with -mavx2 -mfma).
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace fastretrieve {
namespace {

struct SimdAvx2 {
    using V = __m256;
    static constexpr std::size_t W = 8;
    // 2 queries x 4 rows = 8 accumulators + 4 row vectors + 1 query vector fit the 16 ymm
    // registers without spilling.
    static constexpr int kMaxQueriesPerTile = 2;
    // Panel micro-kernel: 6 queries x 2 panel vectors = 12 accumulators + 2 panel vectors
    // + 1 broadcast query value = 15 of the 16 ymm registers.
    static constexpr int kQueriesPerPanelTile = 6;
    // Rows of up to kShortRowDim elements take panels from this many queries on
    // (kernels-inl.hpp, use_panels).
    static constexpr std::size_t kMinPanelQueriesShortRows = 8;

    static V zero() { return _mm256_setzero_ps(); }
    static V set1(float v) { return _mm256_set1_ps(v); }
    static V load(const float* p) { return _mm256_loadu_ps(p); }
    // Lane i is moved when mask lane i has its sign bit set; masked lanes never touch
    // memory, so a row's tail cannot fault (masked loads read them as 0).
    static __m256i first_lanes(std::size_t n) {
        alignas(32) static const std::int32_t ramp[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                          0,  0,  0,  0,  0,  0,  0,  0};
        return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ramp + 8 - n));
    }
    static V load_partial(const float* p, std::size_t n) {
        return _mm256_maskload_ps(p, first_lanes(n));
    }
    // Stored rows, widened to float32: float16 by F16C (every AVX2 CPU has it; dispatch
    // checks), bfloat16 by zero-extending to 32 bits and shifting into the upper half,
    // int8 codes by sign extension and an exact int -> float conversion.
    static V load_f16(const std::uint16_t* p) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    // 2W bfloat16 values as two float32 vectors without shuffles: each 32-bit lane holds
    // elements 2i (low half) and 2i+1 (high half); a shift yields the even elements, a
    // mask the odd ones. The caller pairs them with a query de-interleaved the same way.
    static constexpr bool kPairsBf16 = true;
    static void load_bf16_pairs(const std::uint16_t* p, V* even, V* odd) {
        const __m256i lanes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
        *even = _mm256_castsi256_ps(_mm256_slli_epi32(lanes, 16));
        *odd = _mm256_castsi256_ps(_mm256_and_si256(lanes, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u))));
    }
    static V load_bf16(const std::uint16_t* p) {
        const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
    }
    static V load_i8(const std::int8_t* p) {
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
    }
    // AVX2 has no masked loads of 8- or 16-bit elements: a row's tail (n < 8 elements) is
    // copied into zeros first, so nothing past the row is read.
    template <class T>
    static void copy_tail(const T* p, std::size_t n, T* tail) {
        for (std::size_t i = 0; i < n; ++i) tail[i] = p[i];
    }
    static V load_f16_partial(const std::uint16_t* p, std::size_t n) {
        alignas(16) std::uint16_t tail[W] = {};
        copy_tail(p, n, tail);
        return load_f16(tail);
    }
    static V load_bf16_partial(const std::uint16_t* p, std::size_t n) {
        alignas(16) std::uint16_t tail[W] = {};
        copy_tail(p, n, tail);
        return load_bf16(tail);
    }
    static V load_i8_partial(const std::int8_t* p, std::size_t n) {
        alignas(16) std::int8_t tail[W] = {};
        copy_tail(p, n, tail);
        return load_i8(tail);
    }
    static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
    static void store_partial(float* p, V v, std::size_t n) {
        _mm256_maskstore_ps(p, first_lanes(n), v);
    }
    static V add(V a, V b) { return _mm256_add_ps(a, b); }
    static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
    static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
    static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    static V min(V a, V b) { return _mm256_min_ps(a, b); }
    static float reduce_add(V v) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    static float reduce_min(V v) {
        __m128 s = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        s = _mm_min_ps(s, _mm_movehl_ps(s, s));
        s = _mm_min_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    static bool any_nan(V v) { return _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)) != 0; }
    // Bit i set when lane i of a is below lane i of b (false for NaN).
    static std::uint32_t lanes_below(V a, V b) {
        return static_cast<std::uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_LT_OQ)));
    }
    // Four horizontal sums at once: cheaper than four separate reductions.
    static void reduce4(V a, V b, V c, V d, float* out) {
        const __m256 ab = _mm256_hadd_ps(a, b);
        const __m256 cd = _mm256_hadd_ps(c, d);
        const __m256 abcd = _mm256_hadd_ps(ab, cd);
        _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1)));
    }
    // In-place 8 x 8 transpose (v[i] lane j <-> v[j] lane i): interleave pairs, then quads
    // within 128-bit lanes, then swap 128-bit lanes.
    static void transpose(V* v) {
        V t[8];
        for (int i = 0; i < 8; i += 2) {
            t[i] = _mm256_unpacklo_ps(v[i], v[i + 1]);
            t[i + 1] = _mm256_unpackhi_ps(v[i], v[i + 1]);
        }
        for (int i = 0; i < 8; i += 4) {
            v[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
            v[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
            v[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
            v[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
        }
        for (int j = 0; j < 4; ++j) {
            t[j] = _mm256_permute2f128_ps(v[j], v[j + 4], 0x20);
            t[j + 4] = _mm256_permute2f128_ps(v[j], v[j + 4], 0x31);
        }
        for (int j = 0; j < 8; ++j) v[j] = t[j];
    }
};

}  // namespace
}  // namespace fastretrieve
