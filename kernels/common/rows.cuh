// Row machinery shared by the row-wise kernels (softmax cross-entropy, the
// softmax family): which threads share a row, their reductions, and the
// register tiles a row is read in. The launchers' geometry
// (fastloss/backends/cuda/softmax_cross_entropy.py, launch_shape) matches the
// constants below:
// - k <= 32 * FL_ROW_TILE: rows share warps, a group of row_lanes lanes (a
//   power of two up to 32) per row, FL_ROW_GROUP_BLOCK threads per block;
// - larger k: one block per row of up to FL_ROW_MAX_THREADS threads, row_lanes = 0.

#ifndef FL_COMMON_ROWS_CUH
#define FL_COMMON_ROWS_CUH

#include "common/reduce.cuh"

#define FL_ROW_TILE 16
#define FL_ROW_GROUP_BLOCK 256
#define FL_ROW_MAX_THREADS 256

namespace fl {

__device__ __forceinline__ double widen(float x) { return f32_to_f64(x); }
__device__ __forceinline__ double widen(double x) { return x; }

template <typename C> __device__ __forceinline__ C narrow(double x);
template <> __device__ __forceinline__ float narrow<float>(double x) { return f64_to_f32(x); }
template <> __device__ __forceinline__ double narrow<double>(double x) { return x; }

// Combines `value` over aligned groups of `width` lanes (a power of two up
// to 32) with a butterfly; for width 32 the same tree as warp_allreduce.
// Assumes: all 32 lanes of the warp call it together with the same width.
// Result: in every lane of the group, with identical bits.
template <typename Op>
__device__ __forceinline__ double group_allreduce(double value, Op op, int width) {
    for (int offset = width >> 1; offset > 0; offset >>= 1) {
        value = op(value, __shfl_xor_sync(0xffffffffu, value, offset));
    }
    return value;
}

// The threads that share one row: `lanes` lanes of a warp, or (lanes = 0)
// the whole block. Every thread of the block calls these together: the row
// loop runs the same number of times in every thread.
struct RowGroup {
    int lanes;
    int size;
    int rank;
    double* scratch;

    // The group of this thread for a launch with `row_lanes` (0: the block).
    __device__ __forceinline__ static RowGroup of(int row_lanes, double* scratch) {
        RowGroup g;
        g.lanes = row_lanes;
        g.size = row_lanes ? row_lanes : (int)blockDim.x;
        g.rank = (int)threadIdx.x % g.size;
        g.scratch = scratch;
        return g;
    }
    __device__ __forceinline__ int per_block() const { return (int)blockDim.x / size; }
    __device__ __forceinline__ int index() const { return (int)threadIdx.x / size; }

    __device__ __forceinline__ double sum(double value) const {
        return lanes ? group_allreduce(value, SumOp(), lanes)
                     : block_allreduce(value, SumOp(), 0.0, scratch);
    }
    __device__ __forceinline__ double max(double value) const {
        return lanes ? group_allreduce(value, MaxOp(), lanes)
                     : block_allreduce(value, MaxOp(), -infinity<double>(), scratch);
    }
    // Orders the group's earlier global reads before its later writes (the
    // gradient may overwrite the logits that other threads of the group read).
    // The group's sum and max between them order them too, as built today; this
    // states the order instead of leaving it to how those are built.
    __device__ __forceinline__ void sync() const {
        if (lanes) {
            __syncwarp();
        } else {
            __syncthreads();
        }
    }
};

// A row's sum of exponentials relative to its max m, from the group's count of
// logits equal to a finite m (each exponential exactly 1) and its sum of the
// others, as the exact pair hi + lo (TwoSum), lo within half an ulp of hi. A
// confident row's sum is 1 + s with s small, and its log-sum-exp log(1 + s) is
// made of s, which a sum taken whole keeps only to an ulp of 1; log_sum() keeps it.
struct ExpSum {
    double hi;
    double lo;

    __device__ __forceinline__ static ExpSum of(double ones, double rest) {
        ExpSum s;
        s.hi = ones + rest;
        const double part = s.hi - ones;
        s.lo = (ones - (s.hi - part)) + (rest - part);
        return s;
    }
    // log(hi + lo) to first order in lo / hi.
    __device__ __forceinline__ double log_sum() const { return log(hi) + lo / hi; }
};

// A thread's share of a row's sum of exponentials relative to its running max:
// the logits equal to a finite max (exponential exactly 1) are counted in at_max,
// apart from the sum of the others, `rest`, so that the group's ExpSum keeps a
// confident row's s. The kernels' row states build on it.
template <typename C> struct MaxShare {
    C max;
    double rest;
    double at_max;

    __device__ __forceinline__ void start() {
        max = -infinity<C>();
        rest = 0.0;
        at_max = 0.0;
    }

    // Counts z (not -inf; max already at least z) if it is the max and finite;
    // otherwise false, and its term belongs to rest.
    __device__ __forceinline__ bool count_at_max(C z) {
        const bool at = z == max && z < infinity<C>();
        if (at) at_max += 1.0;
        return at;
    }

    // Moves the reference point to new_max > max: the count joins rest, and rest
    // scales by the returned exp(max - new_max).
    __device__ __forceinline__ double rebase(C new_max) {
        const double f = widen(fl_exp(max - new_max));
        rest = (rest + at_max) * f;
        at_max = 0.0;
        max = new_max;
        return f;
    }
};

// The block's partial of its row losses, written by thread 0 to
// partials[blockIdx.x]: each group's `loss_sum` (held by its rank 0, already in
// row order), added in group index order. Every thread of the block calls it
// after the row loop; `group_loss` is FL_ROW_GROUP_BLOCK doubles of shared
// memory. The barriers bracket the block's use of group_loss: the host emulator
// runs blocks one after another over one copy of shared memory, and its
// ThreadSanitizer build orders blocks only through barriers (rows that share
// warps pass none in the row loop).
__device__ __forceinline__ void store_block_partial(const RowGroup& g, double loss_sum,
                                                    double* group_loss, double* partials) {
    __syncthreads();
    if (g.rank == 0) group_loss[g.index()] = loss_sum;
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (int k = 0; k < g.per_block(); ++k) total += group_loss[k];
        partials[blockIdx.x] = total;
    }
    __syncthreads();
}

// Tile `tile` of a row, as packets: packet (tile * PPT + i) * size + rank for
// i < PPT, so a group's loads of one i are consecutive 16-byte packets (a
// warp's, for a row of 32 lanes or a block).
template <typename T> struct RowTiles {
    static const int pack = Packet<T>::size;
    static const int per_thread = FL_ROW_TILE / pack;  // packets per thread per tile

    // Tiles in a row of `classes` elements for the group `g`.
    __device__ __forceinline__ static i64 count(i64 classes, const RowGroup& g) {
        const i64 packets = (classes + pack - 1) / pack;
        const i64 tile_packets = (i64)g.size * per_thread;
        return (packets + tile_packets - 1) / tile_packets;
    }

    __device__ __forceinline__ static i64 first(i64 tile, int i, const RowGroup& g) {
        return ((tile * per_thread + i) * g.size + g.rank) * pack;
    }

    // Elements at or past `classes` read as `fill`.
    __device__ __forceinline__ static void load(const T* row, i64 classes, i64 tile, const RowGroup& g,
                                                bool aligned, typename Convert<T>::compute_t fill,
                                                typename Convert<T>::compute_t (&out)[FL_ROW_TILE]) {
#pragma unroll
        for (int i = 0; i < per_thread; ++i) {
            const i64 start = first(tile, i, g);
            if (start >= classes) {  // a packet past the row's end: no load at all
#pragma unroll
                for (int e = 0; e < pack; ++e) out[i * pack + e] = fill;
                continue;
            }
            T raw[Packet<T>::size];
            load_packet(row, start, classes, aligned, raw);
#pragma unroll
            for (int e = 0; e < pack; ++e) {
                out[i * pack + e] = start + e < classes ? Convert<T>::to_compute(raw[e]) : fill;
            }
        }
    }
};

}  // namespace fl

#endif  // FL_COMMON_ROWS_CUH
