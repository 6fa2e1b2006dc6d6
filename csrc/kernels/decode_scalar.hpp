// Portable widening of one stored 16-bit element to float32, exact for every input
// (subnormals, infinities and NaN included). Used by the scalar kernels and by the
// driver's float64 rescoring, so both read a stored row exactly as the codecs in
// quantize.py decode it. Everything sits in an anonymous namespace: each translation
// unit that includes this file keeps its own copy, compiled with its own flags.
#pragma once

#include <cstdint>
#include <cstring>

namespace fastretrieve {
namespace {

inline float float_from_bits(std::uint32_t bits) {
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

inline float bfloat16_to_float(std::uint16_t bits) {
    return float_from_bits(static_cast<std::uint32_t>(bits) << 16);
}

inline float float16_to_float(std::uint16_t bits) {
    const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
    const std::uint32_t exponent = (bits >> 10) & 0x1Fu;
    const std::uint32_t mantissa = bits & 0x3FFu;
    if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float32
        const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 0x1F)  // infinity or NaN (payload kept)
        return float_from_bits(sign | 0x7F800000u | (mantissa << 13));
    return float_from_bits(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

}  // namespace
}  // namespace fastretrieve
