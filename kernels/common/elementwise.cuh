// The fused elementwise pass shared by every elementwise loss: one read of
// the input and target (and, for weighted losses, of the per-element weight
// and aux values), the gradient and per-element loss written when asked, one
// float64 partial sum per block.
//
// A loss is a functor F with
//   static constexpr double scale;    // d loss / dx = scale * slope
//   static constexpr bool weighted;   // reads the weight and aux arrays
//   static __device__ void apply(double x, double t, double aux, double param,
//                                double& loss, double& slope);
// evaluated in double precision per element (aux is 1.0 when the loss reads
// none), and a .cu file of its own with FL_ELEMENTWISE_ENTRIES.
//
// Launch (see fastloss/backends/cuda/elementwise.py): FL_ELEMENTWISE_THREADS
// threads per block, grid = min(a fixed cap, ceil(packets / (threads *
// unroll))); then fl_<loss>_finish_<dtype> with one block of FL_SUM_THREADS
// threads, which writes the loss. The partition depends only on n and these
// constants, never on the GPU, so the loss has the same bits on every run and
// every device.

#ifndef FL_COMMON_ELEMENTWISE_CUH
#define FL_COMMON_ELEMENTWISE_CUH

#include "common/reduce.cuh"

#define FL_ELEMENTWISE_THREADS 256
#define FL_ELEMENTWISE_UNROLL 2

namespace fl {

// -1, 0 or 1 by the sign of x (0 for either zero); NaN stays NaN.
__device__ __forceinline__ double signum(double x) {
    return x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : x - x);
}

template <typename F, typename T>
__device__ __forceinline__ void elementwise_pass(const T* pred, const T* target, const T* weight,
                                                 const T* aux, T* grad_out, T* loss_out,
                                                 double* partials, i64 n, double param,
                                                 double divisor) {
    typedef Convert<T> Cv;
    const int pack = Packet<T>::size;
    const int unroll = FL_ELEMENTWISE_UNROLL;
    __shared__ double scratch[32];

    const i64 packets = (n + pack - 1) / pack;
    const i64 stride = (i64)gridDim.x * blockDim.x;
    // grad_out may alias pred or target: each element is read and written by
    // the same thread, reads first, so plain (not __restrict__) pointers.
    const bool aligned = aligned16(pred, target, grad_out, loss_out) &&
                         aligned16(weight, aux, weight, aux);
    const double grad_scale = F::scale / divisor;

    double acc = 0.0;
    for (i64 base = (i64)blockIdx.x * blockDim.x + threadIdx.x; base < packets;
         base += stride * unroll) {
        T p[unroll][Packet<T>::size];
        T t[unroll][Packet<T>::size];
        T w[unroll][Packet<T>::size];
        T a[unroll][Packet<T>::size];
        // All loads of the iteration are issued before any use, to keep
        // several 16-byte requests in flight per thread.
#pragma unroll
        for (int u = 0; u < unroll; ++u) {
            const i64 first = (base + u * stride) * pack;
            load_packet(pred, first, n, aligned, p[u]);
            load_packet(target, first, n, aligned, t[u]);
            if constexpr (F::weighted) {
                if (weight) load_packet(weight, first, n, aligned, w[u]);
                if (aux) load_packet(aux, first, n, aligned, a[u]);
            }
        }
#pragma unroll
        for (int u = 0; u < unroll; ++u) {
            const i64 first = (base + u * stride) * pack;
            T grad[Packet<T>::size];
            T loss[Packet<T>::size];
#pragma unroll
            for (int e = 0; e < pack; ++e) {
                // Exact widening to double: the functor's arithmetic rounds
                // in double, and each result is rounded once to T.
                double auxiliary = 1.0;
                if constexpr (F::weighted) {
                    if (aux) auxiliary = Cv::to_double(a[u][e]);
                }
                double value, slope;
                F::apply(Cv::to_double(p[u][e]), Cv::to_double(t[u][e]), auxiliary, param, value,
                         slope);
                if constexpr (F::weighted) {
                    if (weight) {
                        const double scale = Cv::to_double(w[u][e]);
                        value = __dmul_rn(value, scale);
                        slope = __dmul_rn(slope, scale);
                    }
                }
                // Explicit rounding keeps the sum free of FMA contraction, so
                // it equals the sum of the per-element losses whatever the
                // compiler's -fmad setting.
                if (first + e < n) acc = __dadd_rn(acc, value);
                grad[e] = Cv::from(grad_scale * slope);
                loss[e] = Cv::from(value);
            }
            if (grad_out) store_packet(grad_out, first, n, aligned, grad);
            if (loss_out) store_packet(loss_out, first, n, aligned, loss);
        }
    }
    acc = block_allreduce(acc, SumOp(), 0.0, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

}  // namespace fl

#define FL_ELEMENTWISE_ENTRY(NAME, F, T)                                                        \
    extern "C" __global__ void __launch_bounds__(FL_ELEMENTWISE_THREADS)                       \
        NAME(const T* pred, const T* target, const T* weight, const T* aux, T* grad_out,       \
             T* loss_out, double* partials, long long n, double param, double divisor) {       \
        fl::elementwise_pass<F, T>(pred, target, weight, aux, grad_out, loss_out, partials, n, \
                                   param, divisor);                                             \
    }

// Every entry of one loss: the fused pass and the finishing kernel per storage
// type, named fl_<loss>_<dtype> and fl_<loss>_finish_<dtype>.
#define FL_ELEMENTWISE_ENTRIES(LOSS, F)                                   \
    FL_ELEMENTWISE_ENTRY(fl_##LOSS##_float16, F, fl::half_t)              \
    FL_ELEMENTWISE_ENTRY(fl_##LOSS##_bfloat16, F, fl::bfloat16_t)         \
    FL_ELEMENTWISE_ENTRY(fl_##LOSS##_float32, F, float)                   \
    FL_ELEMENTWISE_ENTRY(fl_##LOSS##_float64, F, double)                  \
    FL_FINISH_ENTRY(fl_##LOSS##_finish_float16, fl::half_t)               \
    FL_FINISH_ENTRY(fl_##LOSS##_finish_bfloat16, fl::bfloat16_t)          \
    FL_FINISH_ENTRY(fl_##LOSS##_finish_float32, float)                    \
    FL_FINISH_ENTRY(fl_##LOSS##_finish_float64, double)

#endif  // FL_COMMON_ELEMENTWISE_CUH
