// Binary cross-entropy of logits x against targets t, aux = pos_weight w:
//   loss  = (1 - t) x + l softplus(-x),        l = 1 + (w - 1) t
//   dl/dx = (1 - t) - l sigmoid(-x) = l sigmoid(x) - w t
// through the fused elementwise pass (common/elementwise.cuh), with the
// per-element weight. For x < 0 the loss is computed as -w t x + l log1p(e^x):
// no cancellation between huge terms, so logits of +-1e30 are exact, and a
// zero coefficient adds nothing even to an infinite logit.

#include "common/elementwise.cuh"

namespace fl {

struct BinaryCrossEntropyWithLogits {
    static constexpr double scale = 1.0;
    static constexpr bool weighted = true;
    static __device__ __forceinline__ void apply(double x, double t, double pos_weight, double,
                                                 double& loss, double& slope) {
        const double tail = exp(-fabs(x));
        const double log_weight = __dadd_rn(1.0, __dmul_rn(pos_weight - 1.0, t));
        const double coefficient = x >= 0.0 ? 1.0 - t : -__dmul_rn(pos_weight, t);
        const double linear = coefficient != 0.0 ? __dmul_rn(coefficient, x) : 0.0;
        const double small = tail / (1.0 + tail);  // sigmoid(-|x|)
        loss = __dadd_rn(linear, __dmul_rn(log_weight, log1p(tail)));
        // (1 - t) - l sigmoid(-x) = l sigmoid(x) - w t: for x < 0 the second form, whose
        // sigmoid is the small one, so that t = 0 keeps every digit. Either way the
        // coefficient, plus or minus l sigmoid(-|x|).
        const double weighted_small = __dmul_rn(log_weight, small);
        slope = __dadd_rn(coefficient, x >= 0.0 ? -weighted_small : weighted_small);
    }
};

}  // namespace fl

FL_ELEMENTWISE_ENTRIES(binary_cross_entropy_with_logits, fl::BinaryCrossEntropyWithLogits)
