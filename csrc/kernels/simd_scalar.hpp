// Portable "vector" of one float: the baseline every CPU runs. Included only by scalar.cpp.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "decode_scalar.hpp"

namespace fastretrieve {
namespace {

struct SimdScalar {
    using V = float;
    static constexpr std::size_t W = 1;
    static constexpr int kMaxQueriesPerTile = 4;
    // No panel micro-kernel: one-lane "vectors" need no horizontal reductions, so packing
    // would be pure overhead.
    static constexpr int kQueriesPerPanelTile = 0;

    static V zero() { return 0.0f; }
    static V set1(float v) { return v; }
    static V load(const float* p) { return *p; }
    static V load_partial(const float*, std::size_t) { return 0.0f; }  // W == 1: no tail
    // Stored rows, widened to float32 (W == 1: never a tail).
    static V load_f16(const std::uint16_t* p) { return float16_to_float(*p); }
    static V load_f16_partial(const std::uint16_t*, std::size_t) { return 0.0f; }
    static constexpr bool kPairsBf16 = false;  // one lane: nothing to gain from pairs
    static void load_bf16_pairs(const std::uint16_t*, V*, V*) {}
    static V load_bf16(const std::uint16_t* p) { return bfloat16_to_float(*p); }
    static V load_bf16_partial(const std::uint16_t*, std::size_t) { return 0.0f; }
    static V load_i8(const std::int8_t* p) { return static_cast<float>(*p); }
    static V load_i8_partial(const std::int8_t*, std::size_t) { return 0.0f; }
    static void store(float* p, V v) { *p = v; }
    static V add(V a, V b) { return a + b; }
    static V sub(V a, V b) { return a - b; }
    static V mul(V a, V b) { return a * b; }
    static V fma(V a, V b, V c) { return a * b + c; }
    static V min(V a, V b) { return b < a ? b : a; }
    static float reduce_add(V v) { return v; }
    static float reduce_min(V v) { return v; }
    static bool any_nan(V v) { return std::isnan(v); }
    static std::uint32_t lanes_below(V a, V b) { return a < b ? 1u : 0u; }
    static void reduce4(V a, V b, V c, V d, float* out) {
        out[0] = a;
        out[1] = b;
        out[2] = c;
        out[3] = d;
    }
};

}  // namespace
}  // namespace fastretrieve
