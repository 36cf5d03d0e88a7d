// Binary cross-entropy of probabilities p against targets t, PyTorch's:
//   loss  = -(t max(log p, -100) + (1 - t) max(log1p(-p), -100))
//   dl/dp = (p - t) / max((1 - p) p, 1e-12f)
// through the fused elementwise pass (common/elementwise.cuh), with the
// per-element weight. A probability or target outside [0, 1] gives NaN (a check
// would synchronise the host).

#include "common/elementwise.cuh"

namespace fl {

struct BinaryCrossEntropy {
    static constexpr double scale = 1.0;
    static constexpr bool weighted = true;

    // The clamp keeps 0 * log 0 finite; NaN stays NaN.
    static __device__ __forceinline__ double clamped(double log_value) {
        return log_value < -100.0 ? -100.0 : log_value;
    }

    static __device__ __forceinline__ void apply(double p, double t, double, double,
                                                 double& loss, double& slope) {
        if (p < 0.0 || p > 1.0 || t < 0.0 || t > 1.0) {
            loss = slope = quiet_nan();
            return;
        }
        // log1p(-p): log(1 - p) would lose a tiny p's digits in the subtraction.
        loss = -__dadd_rn(__dmul_rn(t, clamped(log(p))), __dmul_rn(1.0 - t, clamped(log1p(-p))));
        double spread = __dmul_rn(1.0 - p, p);
        // PyTorch's floor: 1e-12 as a float32.
        if (spread < 9.999999960041972e-13) spread = 9.999999960041972e-13;
        slope = (p - t) / spread;
    }
};

}  // namespace fl

FL_ELEMENTWISE_ENTRIES(binary_cross_entropy, fl::BinaryCrossEntropy)
