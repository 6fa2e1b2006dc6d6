// The avx2 kernel table. CMakeLists.txt compiles this file with its own ISA flags
// (AVX2, FMA, and F16C to widen float16 rows); nothing else in the extension is compiled
// with them.
#include "simd_avx2.hpp"
// simd traits first: kernels-inl.hpp is written against them.
#include "kernels-inl.hpp"

namespace fastretrieve {

const KernelTable& avx2_kernels() {
    static const KernelTable table = make_kernel_table<SimdAvx2>("avx2");
    return table;
}

}  // namespace fastretrieve
