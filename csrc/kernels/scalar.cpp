// The scalar kernel table. CMakeLists.txt compiles this file with its own ISA flags;
// nothing else in the extension is compiled with them.
#include "simd_scalar.hpp"
// simd traits first: kernels-inl.hpp is written against them.
#include "kernels-inl.hpp"

namespace fastretrieve {

const KernelTable& scalar_kernels() {
    static const KernelTable table = make_kernel_table<SimdScalar>("scalar");
    return table;
}

}  // namespace fastretrieve
