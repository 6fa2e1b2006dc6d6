// Exact k-nearest-neighbour search over row-major float32, float16, bfloat16 or int8
// (scalar-quantised) rows with float32 queries, and pairwise distances over float32 data.
// Callers (bindings.cpp) have validated shapes and the queries; the database is checked
// for NaN and infinity inside the scan, never by an extra pass.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/kernel_table.hpp"

namespace fastretrieve {

struct KnnRequest {
    const float* queries;
    std::size_t n_queries;
    const void* database;            // n_database x dim elements of `storage`
    std::size_t n_database;
    std::size_t dim;
    std::size_t k;
    Metric metric;
    std::size_t threads;             // 0: every core this process may use
    // Squared norms of the (decoded) rows: an optional cache for float32 rows, required
    // for every other storage, whose kernels never compute norms of stored elements.
    const float* database_sqnorms;
    bool exclude_self;               // query i is database row i: skip that pair
    Storage storage = Storage::F32;
    // Storage::I8 only: row value t is low[t] + float(code + 128) * step[t], in float32
    // (multiply, then add), as quantize.Int8Codec decodes it.
    const float* quant_low = nullptr;
    const float* quant_step = nullptr;
};

// Writes n_queries x k results, best first; rows with fewer than k candidates are padded
// with index -1 and distance +inf (l2) or -inf (ip, cosine). Returned distances are
// recomputed exactly in double precision for the selected neighbours, from their stored
// rows decoded to float32 -- the vectors the results are exact with respect to.
// Throws std::invalid_argument naming the first database row holding NaN or infinity.
void knn_search(const KnnRequest& request, float* out_distances, std::int64_t* out_indices);

// out[i * n_b + j] = distance (l2, computed directly) or similarity (ip, cosine) of a[i], b[j].
void pairwise_distances(const float* a, std::size_t n_a, const float* b, std::size_t n_b,
                        std::size_t dim, Metric metric, std::size_t threads, float* out);

// out[j] = squared norm of rows[j], in parallel.
void row_sqnorms(const float* rows, std::size_t n_rows, std::size_t dim, std::size_t threads,
                 float* out);

}  // namespace fastretrieve
