// Mean squared error: one pass over pred/target that writes the gradient and
// the per-element loss when asked and leaves one float64 partial sum per block.
//
// Launch (see fastloss/backends/cuda/mse.py): FL_MSE_THREADS threads per
// block, grid = min(FL_MSE_MAX_BLOCKS, ceil(packets / (threads * unroll)));
// then fl_mse_finish_<dtype> with one block of FL_SUM_THREADS threads, which
// writes the loss. The partition depends only on n and these constants, never
// on the GPU, so the loss has the same bits on every run and every device.

#include "common/reduce.cuh"

#define FL_MSE_THREADS 256
#define FL_MSE_UNROLL 2

namespace fl {

template <typename T>
__device__ __forceinline__ void mse_rows(const T* pred, const T* target, T* grad_out, T* loss_out,
                                         double* partials, i64 n, double divisor) {
    typedef Convert<T> Cv;
    const int pack = Packet<T>::size;
    __shared__ double scratch[32];

    const i64 packets = (n + pack - 1) / pack;
    const i64 stride = (i64)gridDim.x * blockDim.x;
    // grad_out may alias pred or target: each element is read and written by
    // the same thread, reads first, so plain (not __restrict__) pointers.
    const bool aligned = aligned16(pred, target, grad_out, loss_out);
    const double grad_scale = 2.0 / divisor;

    double acc = 0.0;
    for (i64 base = (i64)blockIdx.x * blockDim.x + threadIdx.x; base < packets;
         base += stride * FL_MSE_UNROLL) {
        T p[FL_MSE_UNROLL][Packet<T>::size];
        T t[FL_MSE_UNROLL][Packet<T>::size];
        // All loads of the iteration are issued before any use, to keep
        // several 16-byte requests in flight per thread.
#pragma unroll
        for (int u = 0; u < FL_MSE_UNROLL; ++u) {
            const i64 first = (base + u * stride) * pack;
            load_packet(pred, first, n, aligned, p[u]);
            load_packet(target, first, n, aligned, t[u]);
        }
#pragma unroll
        for (int u = 0; u < FL_MSE_UNROLL; ++u) {
            const i64 first = (base + u * stride) * pack;
            T grad[Packet<T>::size];
            T loss[Packet<T>::size];
#pragma unroll
            for (int e = 0; e < pack; ++e) {
                // Exact widening to double: the difference of two float32 or
                // half values is then rounded at most once.
                const double diff = Cv::to_double(p[u][e]) - Cv::to_double(t[u][e]);
                const double square = __dmul_rn(diff, diff);
                // Explicit rounding keeps the sum free of FMA contraction, so
                // it equals the sum of the per-element losses whatever the
                // compiler's -fmad setting.
                if (first + e < n) acc = __dadd_rn(acc, square);
                grad[e] = Cv::from(grad_scale * diff);
                loss[e] = Cv::from(square);
            }
            if (grad_out) store_packet(grad_out, first, n, aligned, grad);
            if (loss_out) store_packet(loss_out, first, n, aligned, loss);
        }
    }
    acc = block_allreduce(acc, SumOp(), 0.0, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

}  // namespace fl

#define FL_MSE_ENTRY(NAME, T)                                                                   \
    extern "C" __global__ void __launch_bounds__(FL_MSE_THREADS)                               \
        NAME(const T* pred, const T* target, T* grad_out, T* loss_out, double* partials,       \
             long long n, double divisor) {                                                     \
        fl::mse_rows<T>(pred, target, grad_out, loss_out, partials, n, divisor);                \
    }

FL_MSE_ENTRY(fl_mse_float16, fl::half_t)
FL_MSE_ENTRY(fl_mse_bfloat16, fl::bfloat16_t)
FL_MSE_ENTRY(fl_mse_float32, float)
FL_MSE_ENTRY(fl_mse_float64, double)

FL_FINISH_ENTRY(fl_mse_finish_float16, fl::half_t)
FL_FINISH_ENTRY(fl_mse_finish_bfloat16, fl::bfloat16_t)
FL_FINISH_ENTRY(fl_mse_finish_float32, float)
FL_FINISH_ENTRY(fl_mse_finish_float64, double)
