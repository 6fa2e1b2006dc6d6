// The distance kernel bodies, written once and templated on a SIMD traits type `S`
// (simd_scalar.hpp, simd_avx2.hpp, simd_avx512.hpp) and, for dot products, on how the
// database rows are stored (F32Rows, F16Rows, BF16Rows, I8Rows below). Each ISA translation unit includes
// this file after its traits and instantiates make_kernel_table<S>() under its own
// compile flags. Everything here sits in an anonymous namespace and uses no standard
// library templates, so no symbol compiled for one ISA can be picked by the linker for
// code that runs on another.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>

#include "kernel_table.hpp"

namespace fastretrieve {
namespace {

// The micro-kernels below run once per handful of rows; called out of line, as the
// compiler chose for most of their instantiations, each call paid a prologue, a stack
// realignment and spills that cost as much as the arithmetic at short dimensions.
#if defined(__GNUC__)
#define FASTRETRIEVE_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define FASTRETRIEVE_ALWAYS_INLINE inline
#endif

// How a kernel reads one Storage kind: its element type and the traits' widening loads.
// Every stored value is widened to float32 exactly, so the dot products are float32
// arithmetic on the stored vectors themselves. For int8 the loads yield the codes c, not
// the decoded values low[t] + (c + 128) * step[t]: the driver folds the quantiser into the
// query (q'[t] = q[t] * step[t], plus a per-query offset), which makes an int8 row as
// cheap to read as a float16 one -- dequantising on load would cost a multiply and an add
// per element and two extra vector loads of low and step, in the loop that the smaller
// rows were meant to speed up. The folded sum differs from the dot product with the
// decoded float32 row only by float32 rounding, as any summation order does; the
// driver's float64 rescoring then reads the decoded row itself.
struct F32Rows {
    static constexpr bool kBf16 = false;
    using Stored = float;
    template <class S> static typename S::V load(const Stored* p) { return S::load(p); }
    template <class S> static typename S::V load_partial(const Stored* p, std::size_t n) {
        return S::load_partial(p, n);
    }
};

struct F16Rows {
    static constexpr bool kBf16 = false;
    using Stored = std::uint16_t;
    template <class S> static typename S::V load(const Stored* p) { return S::load_f16(p); }
    template <class S> static typename S::V load_partial(const Stored* p, std::size_t n) {
        return S::load_f16_partial(p, n);
    }
};

struct BF16Rows {
    using Stored = std::uint16_t;
    static constexpr bool kBf16 = true;
    template <class S> static typename S::V load(const Stored* p) { return S::load_bf16(p); }
    template <class S> static typename S::V load_partial(const Stored* p, std::size_t n) {
        return S::load_bf16_partial(p, n);
    }
};

struct I8Rows {
    static constexpr bool kBf16 = false;
    using Stored = std::int8_t;
    template <class S> static typename S::V load(const Stored* p) { return S::load_i8(p); }
    template <class S> static typename S::V load_partial(const Stored* p, std::size_t n) {
        return S::load_i8_partial(p, n);
    }
};

// Rows of the database handled per micro-kernel call: four accumulators per query feed
// S::reduce4, which sums four vectors horizontally in one go.
constexpr std::size_t kRowsPerTile = 4;

struct DotStep {
    static constexpr bool kDot = true;
    template <class S>
    static typename S::V apply(typename S::V q, typename S::V x, typename S::V acc) {
        return S::fma(q, x, acc);
    }
};

struct L2Step {
    static constexpr bool kDot = false;
    template <class S>
    static typename S::V apply(typename S::V q, typename S::V x, typename S::V acc) {
        const typename S::V diff = S::sub(q, x);
        return S::fma(diff, diff, acc);
    }
};

// Asks for the bytes `ahead` elements past those a step of `step_bytes` bytes is about to
// read from each row, one request per cache line of the rows (reduce_rows says why).
template <class R>
FASTRETRIEVE_ALWAYS_INLINE void prefetch_step(const typename R::Stored* const* rows, std::size_t t,
                                              std::size_t ahead, std::size_t step_bytes) {
    constexpr std::size_t kLineBytes = 64;
    if (ahead == 0 || (t * sizeof(typename R::Stored)) % kLineBytes >= step_bytes) return;
    for (std::size_t r = 0; r < kRowsPerTile; ++r) __builtin_prefetch(rows[r] + t + ahead);
}

// Register-blocked micro-kernel: Q queries x 4 rows, accumulated along the dimension in
// SIMD registers, reduced once at the end. Writes sums[i * 4 + r].
//
// With Paired (bfloat16 dot products only), whole 2W-element chunks of each query are laid
// out de-interleaved (W even elements, then W odd ones; see pair_queries) and the rows are
// widened by S::load_bf16_pairs, two ALU operations per 2W elements instead of two
// shuffles and two shifts; the tail past the last whole chunk is in natural order.
//
// WithNorms (float32 rows, dot products): also accumulates each row's squared norm while
// the row is in registers, into norms[r], so that a scan needing both reads the rows once.
//
// ahead (elements; 0: none): each step also prefetches the same bytes of the rows that far on.
template <class S, class Step, class R, int Q, bool Paired = false, bool WithNorms = false>
FASTRETRIEVE_ALWAYS_INLINE void tile(const float* const* queries, const typename R::Stored* const* rows,
                 std::size_t dim, float* sums, float* norms, std::size_t ahead) {
    using Stored = typename R::Stored;
    static_assert(!(Paired && WithNorms), "norms are fused for float32 rows only");
    using V = typename S::V;
    V acc[Q][kRowsPerTile];
    for (int i = 0; i < Q; ++i)
        for (std::size_t r = 0; r < kRowsPerTile; ++r) acc[i][r] = S::zero();
    V norm_acc[kRowsPerTile] = {S::zero(), S::zero(), S::zero(), S::zero()};

    std::size_t t = 0;
    if constexpr (Paired) {
        for (; t + 2 * S::W <= dim; t += 2 * S::W) {
            V even[kRowsPerTile], odd[kRowsPerTile];
            prefetch_step<R>(rows, t, ahead, 2 * S::W * sizeof(Stored));
            for (std::size_t r = 0; r < kRowsPerTile; ++r)
                S::load_bf16_pairs(rows[r] + t, &even[r], &odd[r]);
            for (int i = 0; i < Q; ++i) {
                const V q_even = S::load(queries[i] + t);
                const V q_odd = S::load(queries[i] + t + S::W);
                for (std::size_t r = 0; r < kRowsPerTile; ++r)
                    acc[i][r] = S::fma(q_odd, odd[r], S::fma(q_even, even[r], acc[i][r]));
            }
        }
    }
    for (; t + S::W <= dim; t += S::W) {
        V x[kRowsPerTile];
        prefetch_step<R>(rows, t, ahead, S::W * sizeof(Stored));
        for (std::size_t r = 0; r < kRowsPerTile; ++r) x[r] = R::template load<S>(rows[r] + t);
        if constexpr (WithNorms)
            for (std::size_t r = 0; r < kRowsPerTile; ++r) norm_acc[r] = S::fma(x[r], x[r], norm_acc[r]);
        for (int i = 0; i < Q; ++i) {
            const V q = S::load(queries[i] + t);
            for (std::size_t r = 0; r < kRowsPerTile; ++r)
                acc[i][r] = Step::template apply<S>(q, x[r], acc[i][r]);
        }
    }
    if (t < dim) {  // the dimension's tail: zero-filled lanes add nothing to either step
        const std::size_t rest = dim - t;
        V x[kRowsPerTile];
        prefetch_step<R>(rows, t, ahead, S::W * sizeof(Stored));
        for (std::size_t r = 0; r < kRowsPerTile; ++r)
            x[r] = R::template load_partial<S>(rows[r] + t, rest);
        if constexpr (WithNorms)
            for (std::size_t r = 0; r < kRowsPerTile; ++r) norm_acc[r] = S::fma(x[r], x[r], norm_acc[r]);
        for (int i = 0; i < Q; ++i) {
            const V q = S::load_partial(queries[i] + t, rest);
            for (std::size_t r = 0; r < kRowsPerTile; ++r)
                acc[i][r] = Step::template apply<S>(q, x[r], acc[i][r]);
        }
    }
    for (int i = 0; i < Q; ++i)
        S::reduce4(acc[i][0], acc[i][1], acc[i][2], acc[i][3], sums + i * kRowsPerTile);
    if constexpr (WithNorms) S::reduce4(norm_acc[0], norm_acc[1], norm_acc[2], norm_acc[3], norms);
}

template <class S, class Step, class R, int Q, bool Paired, bool WithNorms>
FASTRETRIEVE_ALWAYS_INLINE void tile_to_out(const float* const* queries, const typename R::Stored* const* rows,
                        std::size_t dim, std::size_t valid_rows, float* out, std::size_t ld_out,
                        float* norms_out, std::size_t ahead) {
    float sums[Q * kRowsPerTile], norms[kRowsPerTile];
    tile<S, Step, R, Q, Paired, WithNorms>(queries, rows, dim, sums, norms, ahead);
    for (int i = 0; i < Q; ++i)
        for (std::size_t r = 0; r < valid_rows; ++r) out[i * ld_out + r] = sums[i * kRowsPerTile + r];
    if constexpr (WithNorms)
        for (std::size_t r = 0; r < valid_rows; ++r) norms_out[r] = norms[r];
}

// Picks the micro-kernel instantiation for the number of queries left (1..kMax).
template <class S, class Step, class R, int Q, bool Paired, bool WithNorms = false>
FASTRETRIEVE_ALWAYS_INLINE void tile_for_count(int count, const float* const* queries,
                           const typename R::Stored* const* rows, std::size_t dim,
                           std::size_t valid_rows, float* out, std::size_t ld_out,
                           float* norms_out, std::size_t ahead) {
    if constexpr (Q > 1) {
        if (count < Q)
            return tile_for_count<S, Step, R, Q - 1, Paired, WithNorms>(
                count, queries, rows, dim, valid_rows, out, ld_out, norms_out, ahead);
    }
    tile_to_out<S, Step, R, Q, Paired, WithNorms>(queries, rows, dim, valid_rows, out, ld_out,
                                                  norms_out, ahead);
}

// Largest dimension and query count whose de-interleaved copy (pair_queries) lives on the
// stack of reduce_block; larger requests take the plain widening path.
constexpr std::size_t kMaxPairedDim = 1024;
constexpr std::size_t kMaxPairedQueries = 8;

// Lays each whole 2W-element chunk of every query out as its W even elements followed by
// its W odd ones, matching S::load_bf16_pairs; the tail stays in natural order.
template <class S>
inline void pair_queries(const float* queries, std::size_t n_queries, std::size_t dim,
                         float* paired) {
    constexpr std::size_t W = S::W;
    for (std::size_t i = 0; i < n_queries; ++i) {
        const float* q = queries + i * dim;
        float* out = paired + i * dim;
        std::size_t t = 0;
        for (; t + 2 * W <= dim; t += 2 * W)
            for (std::size_t lane = 0; lane < W; ++lane) {
                out[t + lane] = q[t + 2 * lane];
                out[t + W + lane] = q[t + 2 * lane + 1];
            }
        for (; t < dim; ++t) out[t] = q[t];
    }
}

// Few queries: out[i][j] = Step-reduction of queries[i] against rows[j], straight from
// the row-major rows, widened on load (so a 2-byte or 1-byte row costs a half or a quarter
// of the memory traffic of a float32 one, which is what bounds this regime). Rows are the
// outer loop so that four database rows stay in L1 while every query of the block passes
// over them.
// Few queries stream the database from memory. Asking for the rows about 8 KiB ahead of
// the tile being multiplied keeps more misses in flight than the hardware prefetcher
// alone: 1M x 128, 1 query, 19.8-20.5 ms -> 16.3-16.5 ms in alternating runs (4, 16 and
// 32 KiB measured no better). The requests are spread over the tile's steps, one per line
// the step reads, rather than issued in a burst before the tile: a burst stalls once the
// core's few miss buffers are full, and the tile's arithmetic then waits behind it, which
// the extra FMA of fused norms made visible (1 ip query, 200k x 512: 29.1 -> 22.0 ms;
// 10k x 768, 1-7 queries: 1.32-1.36x; 1M x 128 1 ip query 31.6 -> 29.9 ms).
constexpr std::size_t kPrefetchBytesAhead = 8192;

//
// WithNorms: the first group of queries also writes each row's squared norm to norms_out.
template <class S, class Step, class R, bool Paired, bool WithNorms = false>
void reduce_rows(const float* queries, std::size_t n_queries, const typename R::Stored* rows,
                 std::size_t n_rows, std::size_t dim, float* out, std::size_t ld_out,
                 float* norms_out = nullptr) {
    constexpr int kMax = S::kMaxQueriesPerTile;
    const std::size_t tile_bytes = kRowsPerTile * dim * sizeof(typename R::Stored);
    const std::size_t tiles_ahead = (kPrefetchBytesAhead + tile_bytes - 1) / tile_bytes;
    const std::size_t rows_ahead = tiles_ahead * kRowsPerTile;
    for (std::size_t r0 = 0; r0 < n_rows; r0 += kRowsPerTile) {
        const std::size_t valid_rows = n_rows - r0 < kRowsPerTile ? n_rows - r0 : kRowsPerTile;
        // The first group of queries prefetches for all; the last tiles need nothing.
        const std::size_t ahead = r0 + rows_ahead + kRowsPerTile <= n_rows ? rows_ahead * dim : 0;
        const typename R::Stored* row_ptrs[kRowsPerTile];
        for (std::size_t r = 0; r < kRowsPerTile; ++r)  // a short tail repeats its last row
            row_ptrs[r] = rows + (r0 + (r < valid_rows ? r : valid_rows - 1)) * dim;
        for (std::size_t q0 = 0; q0 < n_queries; q0 += kMax) {
            const std::size_t left = n_queries - q0;
            const int count = left < static_cast<std::size_t>(kMax) ? static_cast<int>(left) : kMax;
            const float* query_ptrs[kMax];
            for (int i = 0; i < count; ++i) query_ptrs[i] = queries + (q0 + i) * dim;
            if (WithNorms && q0 == 0)
                tile_for_count<S, Step, R, kMax, Paired, WithNorms>(
                    count, query_ptrs, row_ptrs, dim, valid_rows, out + q0 * ld_out + r0, ld_out,
                    norms_out + r0, ahead);
            else
                tile_for_count<S, Step, R, kMax, Paired>(count, query_ptrs, row_ptrs, dim,
                                                         valid_rows, out + q0 * ld_out + r0, ld_out,
                                                         nullptr, q0 == 0 ? ahead : 0);
        }
    }
}

template <class S, class Step, class R>
void reduce_block(const float* queries, std::size_t n_queries, const typename R::Stored* rows,
                  std::size_t n_rows, std::size_t dim, float* out, std::size_t ld_out) {
    if constexpr (R::kBf16 && Step::kDot && S::kPairsBf16) {
        if (n_queries <= kMaxPairedQueries && dim <= kMaxPairedDim) {
            float paired[kMaxPairedQueries * kMaxPairedDim];
            pair_queries<S>(queries, n_queries, dim, paired);
            return reduce_rows<S, Step, R, true>(paired, n_queries, rows, n_rows, dim, out,
                                                 ld_out);
        }
    }
    reduce_rows<S, Step, R, false>(queries, n_queries, rows, n_rows, dim, out, ld_out);
}

// Many queries: a GEMM-style micro-kernel on packed panels. A panel holds 2 * W database
// rows transposed (panel[t * 2W + r]), so one broadcast query value times two panel
// vectors advances 2W dot products of that query at once: every accumulator lane is a
// finished dot product, with no horizontal reductions (which cost about as much as the
// FMAs of the reducing tile at d = 128). Packing costs one transpose per row and block,
// paid back once enough queries reuse the panel.
constexpr std::size_t kMinPanelQueries = 8;
// Short rows pay it back sooner: their reduce tiles spend more on the horizontal sums
// than on the products (AVX-512, 10k rows, 1 thread, panels against reduce tiles: d = 32
// at 4 queries 123 -> 91 us and at 7 queries 192 -> 109 us; d = 64 at 4 queries even;
// d = 96 at 4 queries 214 -> 254 us; at 2 queries the panels lose from d = 48 on). The
// traits say from how many queries (S::kMinPanelQueriesShortRows): AVX2's reduce tiles
// still win at 4 (panels 1.08x the time at d = 32, 1.30x at d = 64).
constexpr std::size_t kShortRowDim = 64;
// Long rows pay it back later: their reduce tiles spend little on the horizontal sums, and
// packing costs a transpose per element (panels against reduce tiles, 10k to 1M rows, 1
// and 2 threads: at d = 200-768 1.16-1.49x the time at 8 queries and 1.00-1.37x at 12,
// AVX2 1.09-1.50x at 8; from 16 queries on about even, and ahead from 24).
constexpr std::size_t kLongRowDim = 128;
constexpr std::size_t kMinPanelQueriesLongRows = 16;

// Whether dot_block and l2_block multiply packed panels for this many queries of rows of
// this length (KernelTable::uses_panels).
template <class S>
bool use_panels(std::size_t n_queries, std::size_t dim) {
    if constexpr (S::kQueriesPerPanelTile == 0) {
        return false;
    } else {
        const std::size_t least = dim <= kShortRowDim  ? S::kMinPanelQueriesShortRows
                                  : dim <= kLongRowDim ? kMinPanelQueries
                                                       : kMinPanelQueriesLongRows;
        return n_queries >= least;
    }
}

// Copies 2W rows (a short strip repeats its last row) transposed into panel[t * 2W + r],
// one W x W block at a time, widening stored elements to float32 on the way: the
// micro-kernel below stays the same float32 loop for every Storage.
//
// WithNorms: also writes each of the 2W rows' squared norms to norms[r]. After the
// transpose a vector holds one element of W rows, so the squares add up lane by lane, one
// FMA per stored vector and no horizontal sums.
template <class S, class R, bool WithNorms = false>
inline void pack_panel(const typename R::Stored* const* row_ptrs, std::size_t dim, float* panel,
                       float* norms = nullptr) {
    using V = typename S::V;
    constexpr std::size_t W = S::W, P = 2 * W;
    for (std::size_t half = 0; half < 2; ++half) {
        const typename R::Stored* const* half_rows = row_ptrs + half * W;
        V norm_acc = S::zero();
        for (std::size_t t0 = 0; t0 < dim; t0 += W) {
            const std::size_t rest = dim - t0;
            V v[W];
            if (rest >= W)
                for (std::size_t r = 0; r < W; ++r) v[r] = R::template load<S>(half_rows[r] + t0);
            else
                for (std::size_t r = 0; r < W; ++r)
                    v[r] = R::template load_partial<S>(half_rows[r] + t0, rest);
            S::transpose(v);
            const std::size_t columns = rest < W ? rest : W;
            for (std::size_t j = 0; j < columns; ++j) {
                S::store(panel + (t0 + j) * P + half * W, v[j]);
                if constexpr (WithNorms) norm_acc = S::fma(v[j], v[j], norm_acc);
            }
        }
        if constexpr (WithNorms) S::store(norms + half * W, norm_acc);
    }
}

// The rows of the next panel, still to be prefetched. Asking for them two cache lines per
// step of the micro-kernel spreads the requests over the multiplication of the current
// panel, so memory streams in while the FMAs run instead of stalling the next packing (a
// burst of requests would only queue behind the few outstanding misses a core allows).
struct PrefetchCursor {
    const char* next;
    const char* end;
};

// How a panel micro-kernel multiplies. `Query` is what it broadcasts per depth step,
// depth(dim) the panel's depth, pack() fills a panel from 2W stored rows, and apply() is
// one multiply-accumulate step. kStepMajor: the queries come in groups of
// kQueriesPerTile laid out step-major (kernel_table.hpp, Bf16ScreenFn), else row-major.
// The float32 policy below serves every Storage; the bfloat16 screen (avx512_bf16.cpp)
// steps two bfloat16 elements at a time.
template <class S, class Step, class R>
struct Float32Panel {
    using Query = float;
    using V = typename S::V;
    static constexpr int kQueriesPerTile = S::kQueriesPerPanelTile;
    static constexpr bool kStepMajor = false;
    static std::size_t depth(std::size_t dim) { return dim; }
    static void pack(const typename R::Stored* const* row_ptrs, std::size_t dim, float* panel) {
        pack_panel<S, R>(row_ptrs, dim, panel);
    }
    static V broadcast(const float* q) { return S::set1(*q); }
    static V apply(V q, V x, V acc) { return Step::template apply<S>(q, x, acc); }
};

// Q queries x one panel: Q x 2 accumulators, each query value broadcast once per step.
template <class S, class Arith, int Q>
inline void panel_tile(const typename Arith::Query* queries, std::size_t depth,
                       const float* panel, std::size_t valid_rows, float* out,
                       std::size_t ld_out, PrefetchCursor& ahead) {
    using V = typename S::V;
    constexpr std::size_t W = S::W, P = 2 * W;
    V lo[Q], hi[Q];
    for (int i = 0; i < Q; ++i) lo[i] = hi[i] = S::zero();
    for (std::size_t t = 0; t < depth; ++t) {
        if (ahead.next < ahead.end) {
            __builtin_prefetch(ahead.next);
            __builtin_prefetch(ahead.next + 64);
            ahead.next += 128;
        }
        const V x_lo = S::load(panel + t * P), x_hi = S::load(panel + t * P + W);
        for (int i = 0; i < Q; ++i) {
            const V q = Arith::broadcast(Arith::kStepMajor ? queries + t * Q + i
                                                           : queries + i * depth + t);
            lo[i] = Arith::apply(q, x_lo, lo[i]);
            hi[i] = Arith::apply(q, x_hi, hi[i]);
        }
    }
    for (int i = 0; i < Q; ++i) {
        float* row = out + i * ld_out;
        if (valid_rows == P) {  // full panels use plain stores: masked ones are slow on AVX2
            S::store(row, lo[i]);
            S::store(row + W, hi[i]);
        } else if (valid_rows > W) {
            S::store(row, lo[i]);
            S::store_partial(row + W, hi[i], valid_rows - W);
        } else {
            S::store_partial(row, lo[i], valid_rows);
        }
    }
}

// Picks the panel micro-kernel instantiation for the number of queries left (1..Q).
template <class S, class Arith, int Q>
inline void panel_tile_for_count(int count, const typename Arith::Query* queries,
                                 std::size_t depth, const float* panel, std::size_t valid_rows,
                                 float* out, std::size_t ld_out, PrefetchCursor& ahead) {
    if constexpr (Q > 1) {
        if (count < Q)
            return panel_tile_for_count<S, Arith, Q - 1>(count, queries, depth, panel,
                                                         valid_rows, out, ld_out, ahead);
    }
    panel_tile<S, Arith, Q>(queries, depth, panel, valid_rows, out, ld_out, ahead);
}

// Each panel is packed once, then every query of the block passes over it while it sits
// in L1 (2W rows x dim floats: 16 KiB at d = 128 with AVX-512). Queries hold
// Arith::depth(dim) elements each.
//
// WithNorms (float32 rows): also writes each row's squared norm to sqnorms_out, from the
// packing's own read of the rows.
template <class S, class Arith, class R, bool WithNorms = false>
void panel_block(const typename Arith::Query* queries, std::size_t n_queries,
                 const typename R::Stored* rows, std::size_t n_rows, std::size_t dim, float* out,
                 std::size_t ld_out, float* sqnorms_out = nullptr) {
    constexpr std::size_t P = 2 * S::W;
    constexpr int kQ = Arith::kQueriesPerTile;
    const std::size_t depth = Arith::depth(dim);
    // Heap, not stack: dim is unbounded. 64-byte alignment keeps panel loads in one line.
    float* panel = static_cast<float*>(::operator new(P * depth * sizeof(float), std::align_val_t{64}));
    for (std::size_t r0 = 0; r0 < n_rows; r0 += P) {
        const std::size_t valid_rows = n_rows - r0 < P ? n_rows - r0 : P;
        const typename R::Stored* row_ptrs[P];
        for (std::size_t r = 0; r < P; ++r)
            row_ptrs[r] = rows + (r0 + (r < valid_rows ? r : valid_rows - 1)) * dim;
        if constexpr (WithNorms) {
            float norms[P];
            pack_panel<S, R, true>(row_ptrs, dim, panel, norms);
            for (std::size_t r = 0; r < valid_rows; ++r) sqnorms_out[r0 + r] = norms[r];
        } else {
            Arith::pack(row_ptrs, dim, panel);
        }
        const std::size_t next_end = r0 + 2 * P < n_rows ? r0 + 2 * P : n_rows;
        PrefetchCursor ahead{reinterpret_cast<const char*>(rows + (r0 + valid_rows) * dim),
                             reinterpret_cast<const char*>(rows + next_end * dim)};
        for (std::size_t q0 = 0; q0 < n_queries; q0 += kQ) {
            const std::size_t left = n_queries - q0;
            const int count = left < static_cast<std::size_t>(kQ) ? static_cast<int>(left) : kQ;
            panel_tile_for_count<S, Arith, kQ>(count, queries + q0 * depth, depth, panel,
                                               valid_rows, out + q0 * ld_out + r0, ld_out, ahead);
        }
    }
    ::operator delete(panel, std::align_val_t{64});
}

// The table's dot_block / l2_block: panels where enough queries amortise the packing.
template <class S, class Step, class R>
void pairwise_block(const float* queries, std::size_t n_queries, const typename R::Stored* rows,
                    std::size_t n_rows, std::size_t dim, float* out, std::size_t ld_out) {
    if constexpr (S::kQueriesPerPanelTile > 0) {
        if (use_panels<S>(n_queries, dim))
            return panel_block<S, Float32Panel<S, Step, R>, R>(queries, n_queries, rows, n_rows,
                                                               dim, out, ld_out);
    }
    reduce_block<S, Step, R>(queries, n_queries, rows, n_rows, dim, out, ld_out);
}

template <class S, class R>
void dot_block(const float* queries, std::size_t n_queries, const void* rows, std::size_t n_rows,
               std::size_t dim, float* out, std::size_t ld_out) {
    pairwise_block<S, DotStep, R>(queries, n_queries, static_cast<const typename R::Stored*>(rows),
                                  n_rows, dim, out, ld_out);
}

// dot_block's products over float32 rows and each row's squared norm, in one read of the
// rows: the reduce tiles for few queries, the panels' packing where use_panels says.
template <class S>
void dot_norms_block(const float* queries, std::size_t n_queries, const float* rows,
                     std::size_t n_rows, std::size_t dim, float* out, std::size_t ld_out,
                     float* sqnorms_out) {
    if constexpr (S::kQueriesPerPanelTile > 0) {
        if (use_panels<S>(n_queries, dim))
            return panel_block<S, Float32Panel<S, DotStep, F32Rows>, F32Rows, true>(
                queries, n_queries, rows, n_rows, dim, out, ld_out, sqnorms_out);
    }
    reduce_rows<S, DotStep, F32Rows, false, true>(queries, n_queries, rows, n_rows, dim, out,
                                                   ld_out, sqnorms_out);
}

template <class S>
void l2_block(const float* queries, std::size_t n_queries, const float* rows, std::size_t n_rows,
              std::size_t dim, float* out, std::size_t ld_out) {
    pairwise_block<S, L2Step, F32Rows>(queries, n_queries, rows, n_rows, dim, out, ld_out);
}

template <class S>
void sqnorms(const float* rows, std::size_t n_rows, std::size_t dim, float* out) {
    using V = typename S::V;
    for (std::size_t r0 = 0; r0 < n_rows; r0 += kRowsPerTile) {
        const std::size_t valid_rows = n_rows - r0 < kRowsPerTile ? n_rows - r0 : kRowsPerTile;
        const float* row_ptrs[kRowsPerTile];
        for (std::size_t r = 0; r < kRowsPerTile; ++r)
            row_ptrs[r] = rows + (r0 + (r < valid_rows ? r : valid_rows - 1)) * dim;
        V acc[kRowsPerTile] = {S::zero(), S::zero(), S::zero(), S::zero()};
        std::size_t t = 0;
        for (; t + S::W <= dim; t += S::W)
            for (std::size_t r = 0; r < kRowsPerTile; ++r) {
                const V x = S::load(row_ptrs[r] + t);
                acc[r] = S::fma(x, x, acc[r]);
            }
        if (t < dim)
            for (std::size_t r = 0; r < kRowsPerTile; ++r) {
                const V x = S::load_partial(row_ptrs[r] + t, dim - t);
                acc[r] = S::fma(x, x, acc[r]);
            }
        float sums[kRowsPerTile];
        S::reduce4(acc[0], acc[1], acc[2], acc[3], sums);
        for (std::size_t r = 0; r < valid_rows; ++r) out[r0 + r] = sums[r];
    }
}

template <class S, Metric M>
typename S::V score_vector(typename S::V dots, const float* aux) {
    if constexpr (M == Metric::L2) return S::fma(dots, S::set1(-2.0f), S::load(aux));
    if constexpr (M == Metric::IP) return S::sub(S::zero(), dots);
    if constexpr (M == Metric::Cosine) return S::mul(S::sub(S::zero(), dots), S::load(aux));
}

template <Metric M>
inline float score_scalar(float dot, const float* aux) {
    if constexpr (M == Metric::L2) return aux[0] - 2.0f * dot;
    if constexpr (M == Metric::IP) return -dot;
    if constexpr (M == Metric::Cosine) return -dot * aux[0];
}

template <class S, Metric M>
float score_row(float* values, float dot_offset, const float* aux, std::size_t n,
                bool* non_finite) {
    using V = typename S::V;
    const V offset = S::set1(dot_offset);
    V lowest = S::set1(__builtin_inff());
    V poison = S::zero();  // becomes NaN once any score is NaN or infinite (x - x)
    std::size_t j = 0;
    for (; j + S::W <= n; j += S::W) {
        const V score = score_vector<S, M>(S::add(S::load(values + j), offset), aux + j);
        S::store(values + j, score);
        lowest = S::min(lowest, score);
        poison = S::add(poison, S::sub(score, score));
    }
    float lowest_scalar = S::reduce_min(lowest);
    bool bad = S::any_nan(poison);
    for (; j < n; ++j) {
        const float score = score_scalar<M>(values[j] + dot_offset, aux + j);
        values[j] = score;
        lowest_scalar = score < lowest_scalar ? score : lowest_scalar;
        bad = bad || (score - score != 0.0f);
    }
    *non_finite = bad;
    return lowest_scalar;
}

template <class S>
void below_bits(const float* scores, std::size_t n, float threshold, std::uint64_t* bits) {
    static_assert(64 % S::W == 0, "a vector's lanes fill whole bit words");
    const typename S::V limit = S::set1(threshold);
    for (std::size_t word = 0; word * 64 < n; ++word) {
        const std::size_t begin = word * 64, end = begin + 64 < n ? begin + 64 : n;
        std::uint64_t mask = 0;
        std::size_t j = begin;
        for (; j + S::W <= end; j += S::W)
            mask |= static_cast<std::uint64_t>(S::lanes_below(S::load(scores + j), limit))
                    << (j - begin);
        for (; j < end; ++j)
            if (scores[j] < threshold) mask |= std::uint64_t{1} << (j - begin);
        bits[word] = mask;
    }
}

template <class S>
KernelTable make_kernel_table(const char* name) {
    return KernelTable{
        name,
        {&dot_block<S, F32Rows>, &dot_block<S, F16Rows>, &dot_block<S, BF16Rows>,
         &dot_block<S, I8Rows>},
        &dot_norms_block<S>,
        &l2_block<S>,
        &sqnorms<S>,
        {&score_row<S, Metric::L2>, &score_row<S, Metric::IP>, &score_row<S, Metric::Cosine>},
        &below_bits<S>,
        &use_panels<S>,
        nullptr,
        0,
    };
}

}  // namespace
}  // namespace fastretrieve
