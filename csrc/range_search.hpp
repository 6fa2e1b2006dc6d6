// Exact range search over float32 rows: every database row within a radius of each query,
// returned as FAISS returns it (lims, distances, indices). Callers (bindings.cpp) have
// validated shapes and the queries; the database is checked for NaN and infinity inside
// the scan, never by an extra pass.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/kernel_table.hpp"

namespace fastretrieve {

struct RangeRequest {
    const float* queries;
    std::size_t n_queries;
    const float* database;
    std::size_t n_database;
    std::size_t dim;
    // l2: keep squared distances <= radius; ip, cosine: keep similarities >= radius. The
    // comparison is made on the distance recomputed in double precision.
    double radius;
    Metric metric;
    std::size_t threads;      // 0: every core this process may use
    bool exclude_self;        // query i is database row i: skip that pair
    std::size_t max_results;  // more neighbours than this in all: stop, over_limit
};

struct RangeResult {
    // Query i's neighbours are entries [lims[i], lims[i + 1]) of distances and indices,
    // best first, equal distances by lower index; distances are exact (double, rounded).
    std::vector<std::int64_t> lims;
    std::vector<float> distances;
    std::vector<std::int64_t> indices;
    bool over_limit = false;  // more than max_results neighbours: the vectors are empty
};

// Throws std::invalid_argument naming the first database row holding NaN or infinity.
// Peak memory: about 28 bytes per neighbour found (16 while scanning, 12 in the result).
RangeResult range_search(const RangeRequest& request);

}  // namespace fastretrieve
