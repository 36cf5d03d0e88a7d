// The CUDA built-ins that kernels/*.cu use, for a host (g++) build of those
// files. Force-included before each kernel file; the kernel sources are not
// changed, except that their few inline-PTX conversions take the host
// equivalents below when FL_HOST_EMULATION is defined.
//
// Thread and block indices, barriers and warp shuffles are calls into the
// emulator runtime (runtime.cpp), which runs every CUDA thread of a block as
// a fiber. They are out-of-line calls on purpose: the kernel file may be built
// with memory-access instrumentation, and the runtime's own bookkeeping must
// not show up as kernel memory traffic.

#ifndef FL_CUDA_HOST_H
#define FL_CUDA_HOST_H

#define FL_HOST_EMULATION 1

#include <cmath>
#include <cstdint>
#include <cstring>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
// Blocks run one after another, so a function-local static is exactly one
// block's shared memory.
#define __shared__ static

struct uint3 {
    unsigned int x, y, z;
};

// A vector type rather than CUDA's struct: a 16-byte packet load is then one
// 16-byte access, as ld.global.v4 is on the GPU, not four 4-byte ones. (The
// kernels only move uint4 as a whole; they never name its members.)
typedef unsigned int uint4 __attribute__((vector_size(16)));

extern "C" {
uint3 fl_emu_thread_idx(void);
uint3 fl_emu_block_idx(void);
uint3 fl_emu_block_dim(void);
uint3 fl_emu_grid_dim(void);
void fl_emu_syncthreads(const char* file, int line);
void fl_emu_syncwarp(unsigned int mask, const char* file, int line);
unsigned long long fl_emu_shfl_xor(unsigned int mask, unsigned long long bits, int lane_mask,
                                   int width, const char* file, int line);
}

#define threadIdx fl_emu_thread_idx()
#define blockIdx fl_emu_block_idx()
#define blockDim fl_emu_block_dim()
#define gridDim fl_emu_grid_dim()
#define __syncthreads() fl_emu_syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) fl_emu_syncwarp(fl_host::warp_mask(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_xor_sync(mask, value, lane_mask, ...) \
    fl_host::shfl_xor(mask, value, lane_mask, fl_host::shfl_width(__VA_ARGS__), __FILE__, __LINE__)

namespace fl_host {

inline unsigned int warp_mask() { return 0xffffffffu; }
inline unsigned int warp_mask(unsigned int mask) { return mask; }
inline int shfl_width() { return 32; }
inline int shfl_width(int width) { return width; }

template <typename To, typename From>
inline To bit_cast(From from) {
    static_assert(sizeof(To) == sizeof(From), "bit_cast between types of different sizes");
    To to;
    std::memcpy(&to, &from, sizeof(To));
    return to;
}

template <typename T>
inline T shfl_xor(unsigned int mask, T value, int lane_mask, int width, const char* file,
                  int line) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    unsigned long long bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    bits = fl_emu_shfl_xor(mask, bits, lane_mask, width, file, line);
    std::memcpy(&value, &bits, sizeof(T));
    return value;
}

// --- the PTX conversions of kernels/common/reduce.cuh ------------------------------------

inline double cvt_f64_f32(float x) { return (double)x; }

// Host float arithmetic rounds to nearest even and keeps subnormals, as the
// PTX forms without .ftz do.
inline float cvt_rn_f32_f64(double x) { return (float)x; }

inline float cvt_rz_f32_f64(double x) {
    float f = (float)x;
    if (std::fabs((double)f) > std::fabs(x)) f = std::nextafter(f, 0.0f);
    return f;
}

inline double f16_to_f64(unsigned short h) {
    const int exponent = (h >> 10) & 0x1f;
    const int mantissa = h & 0x3ff;
    double magnitude;
    if (exponent == 0x1f) {
        magnitude = mantissa ? NAN : INFINITY;
    } else if (exponent == 0) {
        magnitude = std::ldexp((double)mantissa, -24);
    } else {
        magnitude = std::ldexp((double)(mantissa | 0x400), exponent - 25);
    }
    return (h & 0x8000) ? -magnitude : magnitude;
}

// One rounding to nearest even, subnormals kept; NaN gives the canonical
// 0x7fff as the hardware conversion does.
inline unsigned short f64_to_f16(double x) {
    const unsigned long long bits = bit_cast<unsigned long long>(x);
    const unsigned short sign = (unsigned short)((bits >> 48) & 0x8000);
    const unsigned long long magnitude = bits & 0x7fffffffffffffffull;
    if (magnitude > 0x7ff0000000000000ull) return 0x7fff;
    if (magnitude >= 0x40f0000000000000ull) return sign | 0x7c00;  // >= 65536: inf
    if (magnitude == 0) return sign;
    int exponent = (int)(magnitude >> 52) - 1023;
    unsigned long long significand = magnitude & 0xfffffffffffffull;
    if (exponent == -1023) {
        exponent = -1022;  // a double subnormal: far below half's range
    } else {
        significand |= 1ull << 52;
    }
    // Keep 11 significant bits for a normal half, fewer below 2^-14.
    int shift = 42 + (exponent < -14 ? -14 - exponent : 0);
    if (shift > 63) return sign;  // below 2^-25 (and not a tie): rounds to zero
    unsigned long long kept = significand >> shift;
    const unsigned long long rest = significand & ((1ull << shift) - 1);
    const unsigned long long half = 1ull << (shift - 1);
    if (rest > half || (rest == half && (kept & 1))) ++kept;
    unsigned long long result = exponent < -14 ? kept : ((unsigned long long)(exponent + 14) << 10) + kept;
    if (result >= 0x7c00) result = 0x7c00;
    return sign | (unsigned short)result;
}

inline float cvt_f32_f16(unsigned short h) { return (float)f16_to_f64(h); }
inline double cvt_f64_f16(unsigned short h) { return f16_to_f64(h); }
inline unsigned short cvt_rn_f16_f32(float x) { return f64_to_f16((double)x); }
inline unsigned short cvt_rn_f16_f64(double x) { return f64_to_f16(x); }

}  // namespace fl_host

// --- CUDA math and bit intrinsics ------------------------------------------------------

inline float __int_as_float(int x) { return fl_host::bit_cast<float>(x); }
inline int __float_as_int(float x) { return fl_host::bit_cast<int>(x); }
inline float __uint_as_float(unsigned int x) { return fl_host::bit_cast<float>(x); }
inline unsigned int __float_as_uint(float x) { return fl_host::bit_cast<unsigned int>(x); }
inline double __longlong_as_double(long long x) { return fl_host::bit_cast<double>(x); }
inline long long __double_as_longlong(double x) { return fl_host::bit_cast<long long>(x); }
// The host build has FMA contraction off, so a product or a sum is always
// rounded on its own, as these intrinsics promise.
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }

#endif  // FL_CUDA_HOST_H
