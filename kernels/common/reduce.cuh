// Shared device helpers for the fastloss kernels: storage types and their
// conversions, 16-byte packet loads and stores, warp and block reductions.
//
// This header must compile under NVRTC with no include path but our own, so
// it uses no standard or CUDA headers: NVRTC 13.0 does not ship cuda_fp16.h /
// cuda_bf16.h as builtins, and a pip-only install may have no toolkit headers
// at all. Half and bfloat16 are therefore plain 16-bit storage types whose
// conversions are written out below (in PTX where an instruction exists on
// every supported architecture, in integer arithmetic where it does not).

#ifndef FL_COMMON_REDUCE_CUH
#define FL_COMMON_REDUCE_CUH

namespace fl {

typedef long long i64;
typedef unsigned long long u64;

struct half_t {
    unsigned short bits;
};

struct bfloat16_t {
    unsigned short bits;
};

// ---------------------------------------------------------------------------
// Special values (no <cmath>/INFINITY under NVRTC).

template <typename C> __device__ __forceinline__ C infinity();
template <> __device__ __forceinline__ float infinity<float>() { return __int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double infinity<double>() {
    return __longlong_as_double(0x7ff0000000000000LL);
}

__device__ __forceinline__ double quiet_nan() { return __longlong_as_double(0x7ff8000000000000LL); }

__device__ __forceinline__ float fl_exp(float x) { return expf(x); }
__device__ __forceinline__ double fl_exp(double x) { return exp(x); }
__device__ __forceinline__ float fl_expm1(float x) { return expm1f(x); }
__device__ __forceinline__ double fl_expm1(double x) { return expm1(x); }
__device__ __forceinline__ float fl_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double fl_max(double a, double b) { return fmax(a, b); }

// ---------------------------------------------------------------------------
// Conversions. The PTX forms carry no .ftz: CuPy compiles with -ftz=true,
// which would otherwise flush subnormal inputs and results of these
// conversions and make the NVRTC and nvcc builds disagree.

__device__ __forceinline__ double f32_to_f64(float x) {
    double d;
    asm("cvt.f64.f32 %0, %1;" : "=d"(d) : "f"(x));
    return d;
}

__device__ __forceinline__ float f64_to_f32(double x) {
    float f;
    asm("cvt.rn.f32.f64 %0, %1;" : "=f"(f) : "d"(x));
    return f;
}

// Rounds to nearest even; a NaN becomes the canonical quiet NaN 0x7fc0, as
// in PyTorch. Integer arithmetic, so every architecture gives the same bits.
__device__ __forceinline__ unsigned short f32_to_bf16_bits(float x) {
    unsigned int u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

// Double -> bfloat16 in one rounding: round to float toward zero and set the
// last bit when inexact (round-to-odd), then round to nearest even. Float has
// 16 more significand bits than bfloat16, so the sticky bit cannot create a
// second rounding error.
__device__ __forceinline__ unsigned short f64_to_bf16_bits(double x) {
    if (x != x) return 0x7fc0;
    float f;
    asm("cvt.rz.f32.f64 %0, %1;" : "=f"(f) : "d"(x));
    unsigned int u = __float_as_uint(f);
    if (f32_to_f64(f) != x) u |= 1u;
    return f32_to_bf16_bits(__uint_as_float(u));
}

// Per storage type: the compute type (float for the 16-bit types and float32,
// double for float64), widening, and one-rounding narrowing from float or
// double.
template <typename T> struct Convert;

template <> struct Convert<half_t> {
    typedef float compute_t;
    static __device__ __forceinline__ float to_compute(half_t x) {
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
        return f;
    }
    static __device__ __forceinline__ double to_double(half_t x) {
        double d;
        asm("cvt.f64.f16 %0, %1;" : "=d"(d) : "h"(x.bits));
        return d;
    }
    static __device__ __forceinline__ half_t from(float v) {
        half_t h;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(v));
        return h;
    }
    static __device__ __forceinline__ half_t from(double v) {
        half_t h;
        asm("cvt.rn.f16.f64 %0, %1;" : "=h"(h.bits) : "d"(v));
        return h;
    }
};

template <> struct Convert<bfloat16_t> {
    typedef float compute_t;
    static __device__ __forceinline__ float to_compute(bfloat16_t x) {
        return __uint_as_float(((unsigned int)x.bits) << 16);
    }
    static __device__ __forceinline__ double to_double(bfloat16_t x) {
        return f32_to_f64(to_compute(x));
    }
    static __device__ __forceinline__ bfloat16_t from(float v) {
        bfloat16_t b;
        b.bits = f32_to_bf16_bits(v);
        return b;
    }
    static __device__ __forceinline__ bfloat16_t from(double v) {
        bfloat16_t b;
        b.bits = f64_to_bf16_bits(v);
        return b;
    }
};

template <> struct Convert<float> {
    typedef float compute_t;
    static __device__ __forceinline__ float to_compute(float x) { return x; }
    static __device__ __forceinline__ double to_double(float x) { return f32_to_f64(x); }
    static __device__ __forceinline__ float from(float v) { return v; }
    static __device__ __forceinline__ float from(double v) { return f64_to_f32(v); }
};

template <> struct Convert<double> {
    typedef double compute_t;
    static __device__ __forceinline__ double to_compute(double x) { return x; }
    static __device__ __forceinline__ double to_double(double x) { return x; }
    static __device__ __forceinline__ double from(float v) { return f32_to_f64(v); }
    static __device__ __forceinline__ double from(double v) { return v; }
};

// ---------------------------------------------------------------------------
// 16-byte packets. Work is always partitioned in packets of PACK consecutive
// elements whose first index is a multiple of PACK (a logical index, not an
// address), so the vector path (all pointers 16-byte aligned) and the scalar
// path touch the same elements in the same order: results do not depend on
// where the caller's arrays happen to start.

template <typename T> struct Packet {
    static const int size = 16 / (int)sizeof(T);
};

template <typename T> union PacketBits {
    uint4 raw;
    T value[Packet<T>::size];
};

__device__ __forceinline__ bool aligned16(const void* a, const void* b, const void* c, const void* d) {
    return ((((u64)a) | ((u64)b) | ((u64)c) | ((u64)d)) & 15u) == 0;
}

// Loads elements [first, first + PACK) of `base`; those at or past `n` read
// as zero bits. `first` is a multiple of PACK.
template <typename T>
__device__ __forceinline__ void load_packet(const T* base, i64 first, i64 n, bool aligned,
                                            T (&out)[Packet<T>::size]) {
    const int pack = Packet<T>::size;
    if (aligned && first + pack <= n) {
        PacketBits<T> bits;
        bits.raw = *reinterpret_cast<const uint4*>(base + first);
#pragma unroll
        for (int e = 0; e < pack; ++e) out[e] = bits.value[e];
    } else {
#pragma unroll
        for (int e = 0; e < pack; ++e) {
            if (first + e < n) {
                out[e] = base[first + e];
            } else {
                T zero = T();
                out[e] = zero;
            }
        }
    }
}

template <typename T>
__device__ __forceinline__ void store_packet(T* base, i64 first, i64 n, bool aligned,
                                             const T (&in)[Packet<T>::size]) {
    const int pack = Packet<T>::size;
    if (aligned && first + pack <= n) {
        PacketBits<T> bits;
#pragma unroll
        for (int e = 0; e < pack; ++e) bits.value[e] = in[e];
        *reinterpret_cast<uint4*>(base + first) = bits.raw;
    } else {
#pragma unroll
        for (int e = 0; e < pack; ++e) {
            if (first + e < n) base[first + e] = in[e];
        }
    }
}

// ---------------------------------------------------------------------------
// Reductions. Every combination tree below is fixed by lane and warp indices
// alone, so a given block size gives the same bits on every run and GPU.

struct SumOp {
    __device__ __forceinline__ double operator()(double a, double b) const { return a + b; }
};

struct MaxOp {
    __device__ __forceinline__ double operator()(double a, double b) const { return fmax(a, b); }
};

// Combines `value` over the 32 lanes of a warp with a butterfly.
// Assumes: all 32 lanes are active and call it together.
// Result: in every lane, with identical bits (each step combines the same two
// values in every lane of a pair, and the operations are commutative).
template <typename Op>
__device__ __forceinline__ double warp_allreduce(double value, Op op) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        value = op(value, __shfl_xor_sync(0xffffffffu, value, offset));
    }
    return value;
}

// Combines `value` over the whole block.
// Assumes: a 1-D block whose size is a multiple of 32 and at most 1024; every
// thread calls it (no divergence around the call); `scratch` is 32 doubles of
// shared memory reserved for these calls. `identity` is op's neutral element.
// Result: in every thread, with identical bits. It begins with a barrier, so
// consecutive calls may reuse `scratch` without further synchronisation.
template <typename Op>
__device__ __forceinline__ double block_allreduce(double value, Op op, double identity,
                                                  double* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    value = warp_allreduce(value, op);
    __syncthreads();
    if (lane == 0) scratch[warp] = value;
    __syncthreads();
    value = lane < warps ? scratch[lane] : identity;
    return warp_allreduce(value, op);
}

// What a loss and its gradient divide by: `divisor`, or when `device_divisor` is
// non-null the value there, a "mean" over labels (the weight sum of the rows not
// ignored), NaN where that is 0: PyTorch's mean is then 0 / 0, NaN, also where
// label smoothing leaves a sum that is not 0. (A `divisor` of 0 gives IEEE inf or
// NaN.)
__device__ __forceinline__ double loss_divisor(double divisor, const double* device_divisor) {
    if (!device_divisor) return divisor;
    const double mean = *device_divisor;
    return mean == 0.0 ? quiet_nan() : mean;
}

// The last launch of every loss: sums `count` partials, each thread a
// strided subset in index order and then the block tree, divides by the
// divisor (loss_divisor) and stores the loss rounded once to T.
// Assumes: a single block of FL_SUM_THREADS threads (the partition depends on
// it), satisfying block_allreduce's assumptions.
template <typename T>
__device__ __forceinline__ void finish_loss(const double* partials, i64 count, double divisor,
                                            const double* device_divisor, T* loss) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (i64 i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
    acc = block_allreduce(acc, SumOp(), 0.0, scratch);
    if (threadIdx.x == 0) *loss = Convert<T>::from(acc / loss_divisor(divisor, device_divisor));
}

}  // namespace fl

#define FL_SUM_THREADS 256

// One finishing entry per loss and storage type (see fl::finish_loss).
#define FL_FINISH_ENTRY(NAME, T)                                                                \
    extern "C" __global__ void __launch_bounds__(FL_SUM_THREADS)                               \
        NAME(const double* partials, long long count, double divisor,                          \
             const double* device_divisor, T* loss) {                                          \
        fl::finish_loss<T>(partials, count, divisor, device_divisor, loss);                     \
    }

#endif  // FL_COMMON_REDUCE_CUH
