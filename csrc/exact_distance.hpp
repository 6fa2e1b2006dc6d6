// Distances recomputed in double precision from float32 vectors: what the search results
// report and what range search decides on, whatever arithmetic screened the candidates.
#pragma once

#include <cmath>
#include <cstddef>

#include "kernels/kernel_table.hpp"

namespace fastretrieve {

// Four partial sums per quantity: the compiler may not reassociate double adds, and one
// running sum would chain every add. l2 is summed as squared differences, never as
// |q|^2 - 2<q, x> + |x|^2, so vectors far from the origin lose no digits. Cosine is 0
// when either vector is zero.
template <Metric M>
double exact_score(const float* q, const float* x, std::size_t dim) {
    constexpr std::size_t kLanes = 4;
    double acc[kLanes] = {}, qq[kLanes] = {}, xx[kLanes] = {};
    const auto add = [&](std::size_t lane, std::size_t t) {
        const double a = q[t], b = x[t];
        if constexpr (M == Metric::L2) {
            acc[lane] += (a - b) * (a - b);
        } else {
            acc[lane] += a * b;
            if constexpr (M == Metric::Cosine) {
                qq[lane] += a * a;
                xx[lane] += b * b;
            }
        }
    };
    std::size_t t = 0;
    for (; t + kLanes <= dim; t += kLanes)
        for (std::size_t lane = 0; lane < kLanes; ++lane) add(lane, t + lane);
    for (std::size_t lane = 0; t < dim; ++t, ++lane) add(lane, t);
    const auto total = [](const double* v) { return (v[0] + v[1]) + (v[2] + v[3]); };
    if constexpr (M != Metric::Cosine) {
        return total(acc);
    } else {
        const double q_sq = total(qq), x_sq = total(xx);
        return (q_sq > 0 && x_sq > 0) ? total(acc) / (std::sqrt(q_sq) * std::sqrt(x_sq)) : 0.0;
    }
}

// exact_score for a metric chosen at run time.
inline double exact_distance(const float* q, const float* x, std::size_t dim, Metric metric) {
    switch (metric) {
        case Metric::L2: return exact_score<Metric::L2>(q, x, dim);
        case Metric::IP: return exact_score<Metric::IP>(q, x, dim);
        default: return exact_score<Metric::Cosine>(q, x, dim);
    }
}

}  // namespace fastretrieve
