// How far a float32 selection score can be from the exact one, so that the driver can keep
// every candidate that might be among the exact k best and rescore them all in float64.
//
// The kernels score l2 by the expanded form |x|^2 - 2<q,x> (ip: -<q,x>; cosine:
// -<q,x> / |x| with a unit q). Its rounding error grows with |x|^2 + |q||x|, not with the
// distance: on data far from the origin it exceeds the gaps between neighbours, and the
// float32 scores alone would pick the wrong ones. For each query this file gives the error
// bound M(X) of every row whose norm is at most X (standard dot-product bounds:
// gamma_n = n u / (1 - n u), u = 2^-24, plus the rounding of the cached norms, of the
// score's own arithmetic and of products that underflow). A reservoir that keeps every
// row scoring below the screen's k-th best plus 2 M(X) keeps every exact top-k row (the
// k best screened rows are within M of their exact scores), so the float32 arithmetic
// changes the speed, never the answer. When M is large next to the gaps between scores,
// too many rows are kept: the driver then scans again with rows and queries centred on
// the queries' mean (l2 and ip are translation invariant up to a per-query constant),
// which makes M small again; see knn.cpp.
#pragma once

#include <cstddef>
#include <vector>

#include "knn.hpp"

namespace fastretrieve {

// M(X) = quadratic X^2 + linear X + constant, for rows of norm <= X.
struct ErrorBound {
    double quadratic = 0;
    double linear = 0;
    double constant = 0;

    // The reservoir margin 2 M(X), rounded up to a float (infinity where it overflows).
    float margin(double max_row_norm) const;
};

// Bounds for the float32 scan of queries [query_begin, query_begin + query_count) of
// `request`, one per query, given those queries as the kernels scan them (`queries`, the
// block's first: unit vectors for cosine; for int8 rows scanned as codes, folded with the
// quantiser, with their `dot_offsets`, else nullptr: rows decoded to float32). `centred`:
// rows and queries were rounded to float32 after subtracting a centre (l2), or rows only
// (ip), which adds the rounding of those subtractions.
std::vector<ErrorBound> float32_screen_bounds(const KnnRequest& request, std::size_t query_begin,
                                              std::size_t query_count, const float* queries,
                                              const float* dot_offsets, bool centred);

// The largest row norm, for a block of squared norms as the kernels compute them (a float32
// sum of squares, off by at most gamma_dim relative).
double max_row_norm(const float* sqnorms, std::size_t n, std::size_t dim);

}  // namespace fastretrieve
