// Hinge max(0, margin - t x) with param = margin and targets t of -1 or +1,
// through the fused elementwise pass (common/elementwise.cuh). Another target
// value gives NaN (a check would synchronise the host); the subgradient at the
// kink is 0.

#include "common/elementwise.cuh"

namespace fl {

struct Hinge {
    static constexpr double scale = 1.0;
    static constexpr bool weighted = false;
    static __device__ __forceinline__ void apply(double x, double t, double, double margin,
                                                 double& loss, double& slope) {
        const double gap = __dadd_rn(margin, -__dmul_rn(t, x));
        if (t != 1.0 && t != -1.0) {
            loss = slope = quiet_nan();
        } else if (gap > 0.0) {
            loss = gap;
            slope = -t;
        } else if (gap <= 0.0) {
            loss = slope = 0.0;
        } else {
            loss = slope = gap;
        }
    }
};

}  // namespace fl

FL_ELEMENTWISE_ENTRIES(hinge, fl::Hinge)
