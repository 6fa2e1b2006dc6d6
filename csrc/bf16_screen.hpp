// The bfloat16 screen: how a search over bfloat16 rows uses bfloat16 arithmetic and still
// returns the exact answer for the stored vectors.
//
// The screen kernel (KernelTable::bf16_screen_block) scores rows against the queries
// rounded to bfloat16. For each query this file bounds, over every row, how far a screen
// score can be from the exact score of the float32 query against the stored row:
// Cauchy-Schwarz on the query's rounding error, the float32 accumulation error, the
// flushing of subnormals by vdpbf16ps and the rounding of the cached norms. If every score
// is off by at most M, every exact top-k row scores below the screen's k-th best plus 2M
// (the k rows that are best on the screen are exactly within M of their screen scores, so
// the exact k-th best is at most the screen's k-th best + M). The reservoirs keep all
// those rows (TopK's margin) and the driver rescores them in float64, so the screen
// changes the speed, not the result.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "knn.hpp"

namespace fastretrieve {

struct Bf16Screen {
    std::size_t pairs_per_query = 0;          // ceil(dim / 2)
    // The rounded queries in the kernel's layout (kernel_table.hpp, Bf16ScreenFn), block
    // by block: the block starting at query b begins at b * pairs_per_query.
    std::vector<std::uint32_t> query_groups;
    std::vector<float> margins;               // per query: the reservoir margin, 2M
};

// The screen for `request` (bfloat16 rows with a cached norm per row) and `queries` (the
// queries as the kernels scan them, unit vectors for cosine), scanned in blocks of
// block_size queries by a kernel taking groups of `group`; false where it could not be
// bounded: a query or norm that is not finite, or one that overflows in bfloat16.
bool make_bf16_screen(const KnnRequest& request, const float* queries,
                      std::size_t block_size, std::size_t group, Bf16Screen& screen);

}  // namespace fastretrieve
