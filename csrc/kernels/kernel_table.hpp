// The per-ISA kernel table: the only interface between the ISA-specific translation
// units (kernels/*.cpp, each compiled with its own -m flags) and the portable driver.
// Every entry is a plain function pointer; dispatch.cpp picks one table once.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastretrieve {

// How database rows are stored. Queries are always float32; the kernels widen each stored
// element to float32 exactly (every float16, bfloat16 and int8 value is a float32) and
// do all arithmetic in float32.
//   F32:  float
//   F16:  IEEE half precision bit patterns (std::uint16_t)
//   BF16: bfloat16 bit patterns (std::uint16_t), the upper half of a float32
//   I8:   int8 codes (std::int8_t) of a per-dimension scalar quantiser; the kernel sees the
//         codes themselves as floats, the driver folds the quantiser into the queries.
enum class Storage : int { F32 = 0, F16 = 1, BF16 = 2, I8 = 3 };
constexpr int kStorageKinds = 4;

// out[i * ld_out + j] = <queries[i], rows[j]>   for i < n_queries, j < n_rows, where rows
// holds n_rows x dim elements of the table entry's Storage.
using DotBlockFn = void (*)(const float* queries, std::size_t n_queries, const void* rows,
                            std::size_t n_rows, std::size_t dim, float* out,
                            std::size_t ld_out);

// DotBlockFn's products over float32 rows, and sqnorms_out[j] = <rows[j], rows[j]>, in one
// read of the rows.
using DotNormsBlockFn = void (*)(const float* queries, std::size_t n_queries, const float* rows,
                                 std::size_t n_rows, std::size_t dim, float* out,
                                 std::size_t ld_out, float* sqnorms_out);

// out[i * ld_out + j] = sum_t (queries[i][t] - rows[j][t])^2 over float32 rows, computed
// directly (no cancellation for near-identical vectors). Same shape contract as DotBlockFn.
using L2BlockFn = void (*)(const float* queries, std::size_t n_queries, const float* rows,
                           std::size_t n_rows, std::size_t dim, float* out,
                           std::size_t ld_out);

// out[j] = <rows[j], rows[j]>.
using SqnormsFn = void (*)(const float* rows, std::size_t n_rows, std::size_t dim, float* out);

// Turns one row of dot products into smaller-is-better selection scores, in place, with
// d[j] = dots[j] + dot_offset (the query's share of a folded int8 quantiser, else 0):
//   l2:     scores[j] = row_aux[j] - 2 * d[j]      (row_aux = squared norms)
//   ip:     scores[j] = -d[j]                       (row_aux unused)
//   cosine: scores[j] = -d[j] * row_aux[j]          (row_aux = inverse norms, 0 for 0)
// Returns the minimum score and sets *non_finite when any score is NaN or infinite.
using ScoreRowFn = float (*)(float* dots_to_scores, float dot_offset, const float* row_aux,
                             std::size_t n, bool* non_finite);

// Sets bit j % 64 of bits[j / 64] exactly when scores[j] < threshold, for j < n (the
// words cover ceil(n / 64) x 64 bits; bits past n are zero). The selection then visits
// only the rows that can enter a reservoir instead of testing every score in turn.
using BelowBitsFn = void (*)(const float* scores, std::size_t n, float threshold,
                             std::uint64_t* bits);

// A screen over bfloat16 rows in bfloat16 arithmetic: out[i * ld_out + j] = <q~_i, rows[j]>
// accumulated in float32, where q~_i is query i rounded to bfloat16, as ceil(dim / 2)
// pairs (element 2p in the low 16 bits of pair p, a zero past an odd dim). The queries
// come in groups of KernelTable::bf16_screen_group (the last group may be smaller), each
// group step-major: pair p of the group's query i at group[p * group_count + i], so the
// micro-kernel reads one pointer instead of one per query. Its error against the float32
// dot product is bounded by the driver (bf16_screen.hpp), which keeps every candidate
// within that bound and rescores them exactly.
using Bf16ScreenFn = void (*)(const std::uint32_t* query_groups, std::size_t n_queries,
                              const std::uint16_t* rows, std::size_t n_rows, std::size_t dim,
                              float* out, std::size_t ld_out);

using UsesPanelsFn = bool (*)(std::size_t n_queries, std::size_t dim);

enum class Metric : int { L2 = 0, IP = 1, Cosine = 2 };

struct KernelTable {
    const char* name;  // "scalar", "avx2", "avx512", "avx512_bf16"
    DotBlockFn dot_block[kStorageKinds];  // indexed by Storage
    DotNormsBlockFn dot_norms_block;
    L2BlockFn l2_block;
    SqnormsFn sqnorms;
    ScoreRowFn score_row[3];  // indexed by Metric
    BelowBitsFn below_bits;
    // Whether dot_block and l2_block multiply packed panels for this many queries of rows
    // of this length (they then prefetch the rows of a block themselves, ahead of use);
    // never where the ISA has no panel kernel.
    UsesPanelsFn uses_panels;
    // bfloat16 rows are screened by this where the CPU multiplies bfloat16 natively
    // (AVX512-BF16), from knn.cpp's kBf16ScreenMinQueries on; nullptr elsewhere.
    Bf16ScreenFn bf16_screen_block;
    std::size_t bf16_screen_group;  // queries per group of the screen's layout; 0: none
};

// One factory per ISA translation unit; defined only where that unit is compiled in.
const KernelTable& scalar_kernels();
#if defined(FASTRETRIEVE_X86_KERNELS)
const KernelTable& avx2_kernels();
const KernelTable& avx512_kernels();
const KernelTable& avx512_bf16_kernels();
#endif

}  // namespace fastretrieve
