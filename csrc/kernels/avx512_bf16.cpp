// The avx512_bf16 kernel table: the avx512 table plus a screen that multiplies bfloat16
// rows by bfloat16-rounded queries with vdpbf16ps (AVX512-BF16). One vdpbf16ps does the
// work of two float32 FMAs (32 products per 512-bit instruction, accumulated in float32)
// at the same throughput, so the compute-bound many-queries regime runs up to twice as
// fast on bfloat16 storage. CMakeLists.txt compiles this file with -mavx512bf16 on top of
// the avx512 flags; dispatch picks it only where cpuid reports AVX512-BF16.
#include "simd_avx512.hpp"
// simd traits first: kernels-inl.hpp is written against them.
#include "kernels-inl.hpp"

namespace fastretrieve {
namespace {

// Panel arithmetic in bfloat16 pairs: a panel step holds, per row, the 32-bit pair of
// elements (2p, 2p + 1), so a panel is the 16 x 16 transpose of 32-bit lanes and needs no
// widening; each step broadcasts one query pair and advances two elements of 32 rows.
struct Bf16PairPanel {
    using Query = std::uint32_t;
    // The driver lays the queries out step-major once per search: with one pointer per
    // query the 12 pointers did not fit the free registers, and half were reloaded from
    // the stack at every step.
    static constexpr bool kStepMajor = true;
    using V = __m512;
    static constexpr std::size_t W = SimdAvx512::W;
    // 12 x 2 accumulators, as for float32: 10 and 14 measured the same (1000 x 512 x 200k).
    static constexpr int kQueriesPerTile = SimdAvx512::kQueriesPerPanelTile;

    static std::size_t depth(std::size_t dim) { return (dim + 1) / 2; }

    static void pack(const std::uint16_t* const* row_ptrs, std::size_t dim, float* panel) {
        constexpr std::size_t P = 2 * W;
        const std::size_t pairs = depth(dim);
        for (std::size_t half = 0; half < 2; ++half) {
            const std::uint16_t* const* half_rows = row_ptrs + half * W;
            for (std::size_t p0 = 0; p0 < pairs; p0 += W) {
                // The elements left from pair p0 on; masked-off ones read as zero, which
                // also pads the second element of the last pair of an odd dimension.
                const std::size_t rest = dim - 2 * p0;
                const __mmask32 mask =
                    rest >= 2 * W ? ~__mmask32{0} : static_cast<__mmask32>((1u << rest) - 1u);
                V v[W];
                for (std::size_t r = 0; r < W; ++r)
                    v[r] = _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(mask, half_rows[r] + 2 * p0));
                SimdAvx512::transpose(v);
                const std::size_t columns = pairs - p0 < W ? pairs - p0 : W;
                for (std::size_t j = 0; j < columns; ++j)
                    SimdAvx512::store(panel + (p0 + j) * P + half * W, v[j]);
            }
        }
    }

    static V broadcast(const std::uint32_t* pair) {
        return _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(*pair)));
    }

    static V apply(V q, V x, V acc) {
        return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh&>(q), reinterpret_cast<__m512bh&>(x));
    }
};

void bf16_screen_block(const std::uint32_t* query_groups, std::size_t n_queries,
                       const std::uint16_t* rows, std::size_t n_rows, std::size_t dim, float* out,
                       std::size_t ld_out) {
    panel_block<SimdAvx512, Bf16PairPanel, BF16Rows>(query_groups, n_queries, rows, n_rows, dim,
                                                     out, ld_out);
}

}  // namespace

const KernelTable& avx512_bf16_kernels() {
    static const KernelTable table = [] {
        KernelTable t = avx512_kernels();
        t.name = "avx512_bf16";
        t.bf16_screen_block = &bf16_screen_block;
        t.bf16_screen_group = Bf16PairPanel::kQueriesPerTile;
        return t;
    }();
    return table;
}

}  // namespace fastretrieve
