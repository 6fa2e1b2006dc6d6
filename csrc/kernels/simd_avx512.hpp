// 16-lane AVX-512 vectors. Included only by avx512.cpp (compiled with -mavx512f/bw/dq/vl).
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace fastretrieve {
namespace {

struct SimdAvx512 {
    using V = __m512;
    static constexpr std::size_t W = 16;
    // 6 queries x 4 rows = 24 accumulators + 4 row vectors + 1 query vector: 29 of the 32
    // zmm registers.
    static constexpr int kMaxQueriesPerTile = 6;
    // Panel micro-kernel: 12 queries x 2 panel vectors = 24 accumulators + 2 panel vectors
    // + 1 broadcast query value. 24 independent FMA chains cover the 2 FMA pipes x 4 cycles
    // of latency three times over, and each broadcast feeds two FMAs.
    static constexpr int kQueriesPerPanelTile = 12;
    // Rows of up to kShortRowDim elements take panels from this many queries on
    // (kernels-inl.hpp, use_panels).
    static constexpr std::size_t kMinPanelQueriesShortRows = 4;

    static V zero() { return _mm512_setzero_ps(); }
    static V set1(float v) { return _mm512_set1_ps(v); }
    static V load(const float* p) { return _mm512_loadu_ps(p); }
    static V load_partial(const float* p, std::size_t n) {
        // Masked-off lanes are neither read nor faulted on.
        return _mm512_maskz_loadu_ps(first_lanes(n), p);
    }
    // Stored rows, widened to float32: float16 by vcvtph2ps (AVX-512F), bfloat16 by
    // zero-extending to 32 bits and shifting into the upper half, int8 codes by sign
    // extension and an exact int -> float conversion. Tails use AVX-512BW masked loads.
    static __mmask16 first_lanes(std::size_t n) { return static_cast<__mmask16>((1u << n) - 1u); }
    static V widen_f16(__m256i h) { return _mm512_cvtph_ps(h); }
    static V widen_bf16(__m256i h) {
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    static V widen_i8(__m128i c) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c)); }
    static V load_f16(const std::uint16_t* p) {
        return widen_f16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    static V load_f16_partial(const std::uint16_t* p, std::size_t n) {
        return widen_f16(_mm256_maskz_loadu_epi16(first_lanes(n), p));
    }
    // 2W bfloat16 values as two float32 vectors without shuffles: each 32-bit lane holds
    // elements 2i (low half) and 2i+1 (high half); a shift yields the even elements, a
    // mask the odd ones. The caller pairs them with a query de-interleaved the same way.
    static constexpr bool kPairsBf16 = true;
    static void load_bf16_pairs(const std::uint16_t* p, V* even, V* odd) {
        const __m512i lanes = _mm512_loadu_si512(p);
        *even = _mm512_castsi512_ps(_mm512_slli_epi32(lanes, 16));
        *odd = _mm512_castsi512_ps(_mm512_and_si512(lanes, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
    }
    static V load_bf16(const std::uint16_t* p) {
        return widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    static V load_bf16_partial(const std::uint16_t* p, std::size_t n) {
        return widen_bf16(_mm256_maskz_loadu_epi16(first_lanes(n), p));
    }
    static V load_i8(const std::int8_t* p) {
        return widen_i8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    static V load_i8_partial(const std::int8_t* p, std::size_t n) {
        return widen_i8(_mm_maskz_loadu_epi8(first_lanes(n), p));
    }
    static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
    static void store_partial(float* p, V v, std::size_t n) {
        _mm512_mask_storeu_ps(p, first_lanes(n), v);
    }
    static V add(V a, V b) { return _mm512_add_ps(a, b); }
    static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
    static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
    static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    static V min(V a, V b) { return _mm512_min_ps(a, b); }
    static float reduce_add(V v) { return _mm512_reduce_add_ps(v); }
    static float reduce_min(V v) { return _mm512_reduce_min_ps(v); }
    static bool any_nan(V v) { return _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) != 0; }
    // Bit i set when lane i of a is below lane i of b (false for NaN).
    static std::uint32_t lanes_below(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
    // Four horizontal sums at once: fold 512 -> 256 bits, then the hadd tree.
    static void reduce4(V a, V b, V c, V d, float* out) {
        const __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
        const __m256 b8 = _mm256_add_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1));
        const __m256 c8 = _mm256_add_ps(_mm512_castps512_ps256(c), _mm512_extractf32x8_ps(c, 1));
        const __m256 d8 = _mm256_add_ps(_mm512_castps512_ps256(d), _mm512_extractf32x8_ps(d, 1));
        const __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a8, b8), _mm256_hadd_ps(c8, d8));
        _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1)));
    }
    // In-place 16 x 16 transpose (v[i] lane j <-> v[j] lane i): interleave pairs, then
    // quads within 128-bit lanes, then swap 128-bit lanes twice. 64 shuffles for 256 floats,
    // which is what makes packing database rows cheap next to the FMAs that reuse them.
    static void transpose(V* v) {
        V t[16];
        for (int i = 0; i < 16; i += 2) {
            t[i] = _mm512_unpacklo_ps(v[i], v[i + 1]);
            t[i + 1] = _mm512_unpackhi_ps(v[i], v[i + 1]);
        }
        for (int i = 0; i < 16; i += 4) {
            v[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
            v[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
            v[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
            v[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
        }
        for (int i = 0; i < 16; i += 8)
            for (int j = 0; j < 4; ++j) {
                t[i + j] = _mm512_shuffle_f32x4(v[i + j], v[i + j + 4], 0x88);
                t[i + j + 4] = _mm512_shuffle_f32x4(v[i + j], v[i + j + 4], 0xDD);
            }
        for (int j = 0; j < 8; ++j) {
            v[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
            v[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xDD);
        }
    }
};

}  // namespace
}  // namespace fastretrieve
