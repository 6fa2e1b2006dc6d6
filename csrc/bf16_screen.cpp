#include "bf16_screen.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/decode_scalar.hpp"

namespace fastretrieve {
namespace {

// Round to nearest even, as a float32 to bfloat16 conversion does (the inputs are finite).
std::uint16_t round_to_bfloat16(float value) {
    std::uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    return static_cast<std::uint16_t>(bits >> 16);
}

// What the bound needs to know of the database: the largest norm, and for cosine the
// largest inverse norm (a zero row scores exactly 0 on both sides and is left out).
struct RowNormRange {
    double max_norm = 0;
    double max_inverse_norm = 0;
    bool finite = true;
};

RowNormRange row_norm_range(const KnnRequest& r, double norm_relative_error) {
    float max_sq = 0, min_positive_sq = std::numeric_limits<float>::infinity();
    for (std::size_t j = 0; j < r.n_database; ++j) {
        const float sq = r.database_sqnorms[j];
        if (!std::isfinite(sq)) return {0, 0, false};
        max_sq = std::max(max_sq, sq);
        if (sq > 0) min_positive_sq = std::min(min_positive_sq, sq);
    }
    RowNormRange range;
    range.max_norm = std::sqrt(max_sq * (1 + norm_relative_error));
    if (std::isfinite(min_positive_sq))
        range.max_inverse_norm = (1 + norm_relative_error) / std::sqrt(double(min_positive_sq));
    return range;
}

// Where pair 0 of `query` goes in the kernel's layout, and the stride between its pairs.
struct PairSlot {
    std::size_t first;
    std::size_t stride;
};

PairSlot pair_slot(std::size_t query, std::size_t n_queries, std::size_t pairs,
                   std::size_t block_size, std::size_t group) {
    const std::size_t block_begin = query / block_size * block_size;
    const std::size_t block_count = std::min(block_size, n_queries - block_begin);
    const std::size_t in_block = query - block_begin;
    const std::size_t group_begin = in_block / group * group;
    const std::size_t group_count = std::min(group, block_count - group_begin);
    return {(block_begin + group_begin) * pairs + (in_block - group_begin), group_count};
}

}  // namespace

bool make_bf16_screen(const KnnRequest& r, const float* queries,
                      std::size_t block_size, std::size_t group, Bf16Screen& screen) {
    const std::size_t dim = r.dim;
    const double d = static_cast<double>(dim);
    const double u = 0x1p-24;                  // float32 unit roundoff
    const double gamma = (d + 2) * u;          // float32 sums of dim products, or squares
    const double flushed = 0x1p-126;           // vdpbf16ps flushes subnormals to zero
    const double rho = gamma + 4 * u;          // relative error of a cached inverse norm
    const RowNormRange rows = row_norm_range(r, gamma);
    if (!rows.finite) return false;
    const double x_max = rows.max_norm;

    const std::size_t pairs = (dim + 1) / 2;
    screen.pairs_per_query = pairs;
    screen.query_groups.assign(r.n_queries * pairs, 0u);
    screen.margins.resize(r.n_queries);
    for (std::size_t i = 0; i < r.n_queries; ++i) {
        const float* q = queries + i * dim;
        const PairSlot slot = pair_slot(i, r.n_queries, pairs, block_size, group);
        std::uint32_t* first = screen.query_groups.data() + slot.first;
        double err_sq = 0, rounded_sq = 0, rounded_l1 = 0;  // of q - q~, of q~
        for (std::size_t t = 0; t < dim; ++t) {
            const std::uint16_t bits = round_to_bfloat16(q[t]);
            const double rounded = bfloat16_to_float(bits);
            if (!std::isfinite(rounded)) return false;
            first[t / 2 * slot.stride] |= static_cast<std::uint32_t>(bits) << (16 * (t % 2));
            err_sq += (q[t] - rounded) * (q[t] - rounded);
            rounded_sq += rounded * rounded;
            rounded_l1 += std::fabs(rounded);
        }
        const double e = std::sqrt(err_sq), nq = std::sqrt(rounded_sq);
        double bound = 0;  // M: |screen score - exact score| for every row
        if (r.metric == Metric::Cosine) {
            // score = -dot * inverse norm: the row's norm cancels from the dot's error
            // bound, except in the subnormal term.
            bound = (e + gamma * nq) * (1 + rho) +
                    flushed * (std::sqrt(d) * (1 + rho) + (rounded_l1 + d) * rows.max_inverse_norm) +
                    (nq + e) * (rho + 2 * u);
        } else {
            const double dot = (e + gamma * nq) * x_max +
                               flushed * (std::sqrt(d) * x_max + rounded_l1 + d);
            bound = r.metric == Metric::IP
                        ? dot + u * (nq + e) * x_max
                        // score = norm^2 - 2 dot: the cached squared norm is a float32
                        // sum, and the score's own rounding
                        : 2 * dot + gamma * x_max * x_max +
                              2 * u * (x_max * x_max + 2 * (nq + e) * x_max);
        }
        const double margin = 2 * bound * (1 + 0x1p-10);
        if (!std::isfinite(margin) || margin > std::numeric_limits<float>::max()) return false;
        screen.margins[i] = static_cast<float>(margin);
    }
    return true;
}

}  // namespace fastretrieve
