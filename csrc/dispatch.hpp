// CPU feature detection (once) and the choice of kernel table (once, or when a test
// forces a level). FASTRETRIEVE_SIMD=scalar|avx2|avx512|avx512_bf16 forces a level at first use.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "kernels/kernel_table.hpp"

namespace fastretrieve {

struct CpuFeatures {
    bool avx2 = false;  // with FMA, F16C and OS support for the ymm state
    bool avx512 = false;  // F + BW + DQ + VL with OS support for the zmm state
    bool avx512_bf16 = false;
    bool avx512_fp16 = false;
    bool avx512_vnni = false;
    bool amx = false;  // AMX-TILE + BF16 + INT8 with OS support for the tile state
    bool neon = false;
    bool amd = false;  // vendor "AuthenticAMD": chooses between equally supported levels
};

const CpuFeatures& cpu_features();

// Levels this CPU can run, slowest first ("scalar" always).
std::vector<std::string> supported_levels();

// The level chosen when FASTRETRIEVE_SIMD names none: the fastest this CPU runs, which is
// the last supported level except where a level's instructions are slow on this vendor.
std::string default_level();

// The table in use. The first call honours FASTRETRIEVE_SIMD; an unknown or unsupported
// level throws std::invalid_argument naming the levels that are available.
const KernelTable& active_kernels();

// Switches the table for the whole process (tests use it to cover every level).
void force_level(const std::string& level);

}  // namespace fastretrieve
