// Exact k-nearest-neighbour search and pairwise distances over float32 row-major data.
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
    const float* database;
    std::size_t n_database;
    std::size_t dim;
    std::size_t k;
    Metric metric;
    std::size_t threads;             // 0: every core this process may use
    const float* database_sqnorms;   // optional cache of squared row norms (l2, cosine)
    bool exclude_self;               // query i is database row i: skip that pair
};

// Writes n_queries x k results, best first; rows with fewer than k candidates are padded
// with index -1 and distance +inf (l2) or -inf (ip, cosine). Returned distances are
// recomputed exactly in double precision for the selected neighbours.
// Throws std::invalid_argument naming the first database row holding NaN or infinity.
void knn_search(const KnnRequest& request, float* out_distances, std::int64_t* out_indices);

// out[i * n_b + j] = distance (l2, computed directly) or similarity (ip, cosine) of a[i], b[j].
void pairwise_distances(const float* a, std::size_t n_a, const float* b, std::size_t n_b,
                        std::size_t dim, Metric metric, std::size_t threads, float* out);

// out[j] = squared norm of rows[j], in parallel.
void row_sqnorms(const float* rows, std::size_t n_rows, std::size_t dim, std::size_t threads,
                 float* out);

}  // namespace fastretrieve
