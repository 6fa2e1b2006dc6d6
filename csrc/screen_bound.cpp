#include "screen_bound.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "topk.hpp"

namespace fastretrieve {
namespace {

constexpr double kUnitRoundoff = 0x1p-24;
// Absolute error of products that underflow: each is off by at most half the smallest
// subnormal, and a sum of them by dim times that (doubled for the two passes of l2).
constexpr double kUnderflow = 0x1p-149;

// gamma for float32 sums of `dim` products, with room for the few roundings of the score
// itself (the add of a folded offset, the multiply by -2, the subtract from the norm):
// (dim + 6) u, then 1 % for the 1 / (1 - n u) of gamma_n and the rounding of this bound.
double float32_gamma(std::size_t dim) { return (static_cast<double>(dim) + 6) * kUnitRoundoff * 1.01; }

double norm(const float* v, std::size_t dim) {
    double sum = 0;
    for (std::size_t t = 0; t < dim; ++t) sum += double(v[t]) * v[t];
    return std::sqrt(sum);
}

// The largest inverse norm among rows with a non-zero cached squared norm (int8 cosine
// only, whose dot error is bounded through the codes rather than the row's norm).
double max_inverse_row_norm(const KnnRequest& r) {
    float smallest = std::numeric_limits<float>::infinity();
    for (std::size_t j = 0; j < r.n_database; ++j)
        if (r.database_sqnorms[j] > 0) smallest = std::min(smallest, r.database_sqnorms[j]);
    return std::isinf(smallest) ? 0.0 : 1.01 / std::sqrt(double(smallest));
}

}  // namespace

float ErrorBound::margin(double max_row_norm) const {
    const double bound = (quadratic * max_row_norm + linear) * max_row_norm + constant;
    const double doubled = 2 * bound * (1 + 0x1p-20);
    if (!(doubled < std::numeric_limits<float>::max())) return std::numeric_limits<float>::infinity();
    return float_above(doubled);
}

double max_row_norm(const float* sqnorms, std::size_t n, std::size_t dim) {
    // Eight independent maxima (x > m ? x : m is exactly maxps), so the loop vectorises
    // instead of waiting on one chain of compares.
    constexpr std::size_t kLanes = 8;
    float largest[kLanes] = {};
    std::size_t j = 0;
    for (; j + kLanes <= n; j += kLanes)
        for (std::size_t lane = 0; lane < kLanes; ++lane) {
            const float x = sqnorms[j + lane];
            largest[lane] = x > largest[lane] ? x : largest[lane];
        }
    for (; j < n; ++j) largest[0] = sqnorms[j] > largest[0] ? sqnorms[j] : largest[0];
    const float top = *std::max_element(largest, largest + kLanes);
    return std::sqrt(double(top) * (1 + float32_gamma(dim)));
}

std::vector<ErrorBound> float32_screen_bounds(const KnnRequest& r, std::size_t query_begin,
                                              std::size_t query_count, const float* queries,
                                              const float* dot_offsets, bool centred) {
    const std::size_t dim = r.dim;
    const double g = float32_gamma(dim), d = static_cast<double>(dim), u = kUnitRoundoff;
    // int8 rows scanned as their codes c (|c| <= 128 sqrt(dim)) against the query folded
    // with the quantiser (dot_offsets given); a centred scan decodes them to float32.
    const bool folded = r.storage == Storage::I8 && dot_offsets != nullptr;
    const double inverse_norm = folded && r.metric == Metric::Cosine ? max_inverse_row_norm(r) : 0;
    std::vector<ErrorBound> bounds(query_count);
    for (std::size_t i = 0; i < query_count; ++i) {
        const double scanned = norm(queries + i * dim, dim);
        // |q| of the query as its dot products are formed: folded int8 queries stand for
        // the query itself in |<q, x>|.
        const double q = folded ? norm(r.queries + (query_begin + i) * dim, dim) : scanned;
        // What a folded dot adds: the codes' sum sum_t |q'_t c_t| (twice: the products'
        // rounding and the folding's), and the offset that completes the dot, rounded once.
        const double fixed =
            folded ? 2 * scanned * 128 * std::sqrt(d) + std::fabs(double(dot_offsets[i])) : 0;
        ErrorBound& b = bounds[i];
        if (r.metric == Metric::Cosine) {
            // -dot * inverse norm with a unit q: the dot's error g |x| times 1 / |x|, and the
            // inverse norm (a float32 sum, sqrt, divide) off by g + 4u relative. Products
            // that underflow: rows with a non-zero float32 squared norm have |x| >= 2^-75.
            b.constant = (2 * g + 4 * u) * (q + u) + g * fixed * inverse_norm +
                         d * kUnderflow * 0x1p75;
        } else if (r.metric == Metric::IP) {
            b.linear = g * q;
            b.constant = g * fixed + 2 * d * kUnderflow;
            if (centred) b.linear += 2 * u * q;  // rows rounded after the centre is subtracted
        } else {
            // |x|^2 (its cached or computed float32 sum) - 2 dot, and the score's rounding.
            b.quadratic = g;
            b.linear = 2 * g * q;
            b.constant = 2 * g * fixed + 4 * d * kUnderflow;
            if (centred) {
                // Rounding x - c and q - c moves |x - q|^2 by at most 2u (|x'| + |q'|)^2.
                b.quadratic += 2.02 * u;
                b.linear += 4.04 * u * q;
                b.constant += 2.02 * u * q * q;
            }
        }
    }
    return bounds;
}

}  // namespace fastretrieve
