// KL divergence with param = log_target (0 or 1), through the fused elementwise
// pass (common/elementwise.cuh): x log-probabilities, t probabilities (or their
// logs, so that p = e^t and log p = t); a zero probability adds 0 (0 log 0 = 0),
// as in PyTorch.

#include "common/elementwise.cuh"

namespace fl {

struct KlDiv {
    static constexpr double scale = 1.0;
    static constexpr bool weighted = false;
    static __device__ __forceinline__ void apply(double x, double t, double, double log_target,
                                                 double& loss, double& slope) {
        const bool of_logs = log_target != 0.0;
        const double p = of_logs ? exp(t) : t;
        const double log_p = of_logs ? t : log(t);
        // Rounded products, then the difference: no FMA, as on the CPU. With log_target,
        // p (t - x) (PyTorch's form: an e^t past the largest double gives inf, not inf - inf).
        const double p_log_p = p == 0.0 ? 0.0 : __dmul_rn(p, log_p);
        loss = of_logs && p != 0.0 ? __dmul_rn(p, t - x) : __dadd_rn(p_log_p, -__dmul_rn(p, x));
        slope = -p;
    }
};

}  // namespace fl

FL_ELEMENTWISE_ENTRIES(kl_div, fl::KlDiv)
