// Negative log-likelihood over class indices (PyTorch's nll_loss on (N, k)
// log-probabilities): per-row loss, the gradient (optionally in place over the
// log-probabilities) and one float64 partial sum of the row losses per block.
//
// Row r with label y, weights w (1 when null), divisor d:
//   y == ignore_index:  L_r = 0,              gradient row 0
//   0 <= y < k:         L_r = -w_y lp[r, y],  gradient row 0 but -w_y / d at y
//   otherwise:          L_r = NaN,            gradient row NaN
// L_r is computed in double from the exact log-probability; -w_y / d is
// computed in double and rounded once to the storage type. A log-probability
// of -inf at the label gives L = +inf (w_y > 0); anywhere else it is not read.
//
// Launch: common/rows.cuh's geometry (the launcher's launch_shape, as for
// softmax cross-entropy), blocks striding over rows; then
// fl_nll_finish_<dtype> with one block of FL_SUM_THREADS threads, which
// writes the loss. The partition depends on (rows, k) only.
//
// Traffic: the gradient is the only sizeable stream. Rank 0 of a row's group
// alone reads the label, the label's log-probability and weight (nothing for
// an ignored or invalid label), so each is read once, and hands the row's
// gradient (its one non-zero column and value) over in shared memory. The
// block then writes the gradient of the round's rows, every element (zeros
// included) once, reading nothing: rows that share a block (k <= 512) as one
// flat span, element by element; a row with a block of its own in 16-byte
// packets when its rows are whole packets on 16 bytes, else element by
// element, each warp store aligned to whole sectors. The writes of a round follow a barrier after its reads, so a
// gradient written in place over the log-probabilities is safe.
//
// The divisor comes as a value, or (device_divisor non-null) as a float64 in
// device memory, read once per thread that computes rows.

#include "common/rows.cuh"

namespace fl {

// A row's gradient in the storage type: `hot` at `column`, `fill` elsewhere
// (column = y, fill = 0 for a valid label; column = -1 and fill = 0 for an
// ignored label, NaN for an invalid one).
template <typename T> struct RowGradient {
    i64 column;
    T hot;
    T fill;

    __device__ __forceinline__ T at(i64 c) const { return c == column ? hot : fill; }
};

// Writes value(j) to out[j] for j in [0, n), thread t on j = t - o + m * blockDim.x,
// o being how many elements past a multiple of 32 elements `out` lies in memory:
// each warp store covers 32 elements from a multiple of 32, whole sectors,
// wherever `out` starts. The first round, partly before `out`, is a store of
// its own, so that every later one is a whole warp's.
template <typename T, typename Value>
__device__ __forceinline__ void store_span(T* out, i64 n, Value value) {
    const i64 first = (i64)threadIdx.x - (i64)(((u64)out / sizeof(T)) % 32);
    if (first >= 0 && first < n) out[first] = value(first);
    for (i64 j = first + blockDim.x; j < n; j += blockDim.x) out[j] = value(j);
}

// Packet p of a row whose every packet is whole and 16-byte aligned.
template <typename T>
__device__ __forceinline__ void store_row_packet(T* row, i64 p, const RowGradient<T>& grad) {
    const int pack = Packet<T>::size;
    T values[Packet<T>::size];
#pragma unroll
    for (int e = 0; e < pack; ++e) values[e] = grad.at(p * pack + e);
    store_packet(row, p * pack, p * pack + pack, true, values);
}

template <typename T>
__device__ __forceinline__ void nll_rows(const T* log_probs, const i64* labels,
                                         const double* weight, T* grad_out, double* loss_out,
                                         double* partials, i64 rows, i64 classes,
                                         i64 ignore_index, double divisor,
                                         const double* device_divisor, int row_lanes) {
    typedef Convert<T> Cv;
    const int pack = Packet<T>::size;
    __shared__ double group_loss[FL_ROW_GROUP_BLOCK];
    // Each group's row gradient, handed from its rank 0 to whichever threads write it.
    __shared__ RowGradient<T> row_grad[FL_ROW_GROUP_BLOCK];

    const RowGroup g = RowGroup::of(row_lanes, (double*)0);  // no group reductions
    const int groups_per_block = g.per_block();
    const int group_index = g.index();
    // A row of whole packets from a 16-byte aligned start: then every row is.
    const bool aligned = classes % pack == 0 && aligned16(grad_out, (const void*)0,
                                                          (const void*)0, (const void*)0);
    // Only rank 0 computes rows, so only it reads the divisor. (device_divisor is
    // tested here too, though loss_divisor tests it: without it ptxas gave these
    // entries up to 13 more registers, sm_80-90.)
    double div = divisor;
    if (grad_out && g.rank == 0 && device_divisor) div = fl::loss_divisor(divisor, device_divisor);

    double loss_sum = 0.0;  // this group's rows, in row order (used by rank 0)
    for (i64 first = (i64)blockIdx.x * groups_per_block; first < rows;
         first += (i64)gridDim.x * groups_per_block) {
        const i64 row = first + group_index;
        // The hand-over slots are written again only after every thread has
        // read them for the last round (and, on the emulator, after the
        // previous block's last use of them).
        __syncthreads();
        if (row < rows && g.rank == 0) {
            const i64 label = labels[row];
            double loss = 0.0;
            RowGradient<T> grad;
            grad.column = -1;
            grad.fill = Cv::from(0.0);
            if (label == ignore_index) {
                grad.hot = grad.fill;
            } else if (label < 0 || label >= classes) {
                loss = quiet_nan();
                grad.hot = grad.fill = Cv::from(quiet_nan());
            } else {
                const double w = weight ? weight[label] : 1.0;
                loss = -(w * Cv::to_double(log_probs[row * classes + label]));
                grad.column = label;
                grad.hot = Cv::from(-(w / div));
            }
            if (loss_out) loss_out[row] = loss;
            loss_sum += loss;
            if (grad_out) row_grad[group_index] = grad;
        }
        if (!grad_out) continue;  // the same in every thread

        // Every read of the round's rows (in place: of their log-probabilities)
        // and every hand-over precede any write of their gradient.
        __syncthreads();
        if (g.lanes) {
            // The round's rows are one contiguous span of at most
            // FL_ROW_GROUP_BLOCK * 32 * FL_ROW_TILE elements (int indices),
            // which the block writes as a flat array.
            const i64 count = rows - first < groups_per_block ? rows - first : groups_per_block;
            const int width = (int)classes;
            store_span(grad_out + first * classes, count * classes, [&](i64 j) {
                const int r = (int)j / width;
                return row_grad[r].at((int)j - r * width);
            });
        } else {
            RowGradient<T> grad;  // member by member: the slot's padding is never written
            grad.column = row_grad[0].column;
            grad.hot = row_grad[0].hot;
            grad.fill = row_grad[0].fill;
            T* out = grad_out + first * classes;
            if (aligned) {
                // As store_span, in 16-byte packets.
                const i64 packets = classes / pack;
                const i64 first_packet = (i64)threadIdx.x - (i64)(((u64)out / 16) % 32);
                if (first_packet >= 0 && first_packet < packets) {
                    store_row_packet(out, first_packet, grad);
                }
                for (i64 p = first_packet + blockDim.x; p < packets; p += blockDim.x) {
                    store_row_packet(out, p, grad);
                }
            } else {
                store_span(out, classes, [&](i64 c) { return grad.at(c); });
            }
        }
    }

    store_block_partial(g, loss_sum, group_loss, partials);
}

}  // namespace fl

#define FL_NLL_ENTRY(SUFFIX, T)                                                                  \
    extern "C" __global__ void __launch_bounds__(FL_ROW_MAX_THREADS)                           \
        fl_nll_##SUFFIX(const T* log_probs, const long long* labels, const double* weight,     \
                        T* grad_out, double* loss_out, double* partials, long long rows,        \
                        long long classes, long long ignore_index, double divisor,              \
                        const double* device_divisor, int row_lanes) {                          \
        fl::nll_rows<T>(log_probs, labels, weight, grad_out, loss_out, partials, rows, classes, \
                        ignore_index, divisor, device_divisor, row_lanes);                      \
    }

FL_NLL_ENTRY(float16, fl::half_t)
FL_NLL_ENTRY(bfloat16, fl::bfloat16_t)
FL_NLL_ENTRY(float32, float)
FL_NLL_ENTRY(float64, double)

FL_FINISH_ENTRY(fl_nll_finish_float16, fl::half_t)
FL_FINISH_ENTRY(fl_nll_finish_bfloat16, fl::bfloat16_t)
FL_FINISH_ENTRY(fl_nll_finish_float32, float)
FL_FINISH_ENTRY(fl_nll_finish_float64, double)
