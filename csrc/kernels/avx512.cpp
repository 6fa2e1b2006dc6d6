// The avx512 kernel table. CMakeLists.txt compiles this file with its own ISA flags;
// nothing else in the extension is compiled with them.
#include "simd_avx512.hpp"
// simd traits first: kernels-inl.hpp is written against them.
#include "kernels-inl.hpp"

namespace fastretrieve {

const KernelTable& avx512_kernels() {
    static const KernelTable table = make_kernel_table<SimdAvx512>("avx512");
    return table;
}

}  // namespace fastretrieve
