"""Statistics for launch decisions: pure functions over counts, one module per method.

| module | method |
| --- | --- |
| `proportion` | one-sample proportion z-test (offline gate) and confidence intervals of a proportion |
| `two_proportions` | two-proportion z-test and confidence interval of the difference (model - legacy) |
| `power` | power at the minimum detectable effect and the sample it needs |
| `srm` | sample ratio mismatch: chi-square of exposures against configured weights |
| `guardrails` | is a model-arm error or fallback rate above its limit (Wilson lower bound) |
| `stratified` | Mantel-Haenszel risk difference over periods of constant weights (no Simpson's paradox) |
| `sequential` | normal-mixture SPRT: always-valid p-values and confidence sequences (peeking allowed) |
| `clustered` | rates and Mantel-Haenszel differences by randomisation unit: cluster-robust variance from bucket totals, small-sample floor |
| `one_sided` | half-normal mixture SPRT: one-sided sequences for non-inferiority (tuned to the margin) and harm |
| `guardrail_sequence` | anytime-valid "rate above limit": truncated beta-binomial mixture martingale |
| `srm_sequential` | anytime-valid sample ratio mismatch (Dirichlet-multinomial, Lindon & Malek 2020) on unit-equivalent counts; outcome-rate check |
| `sequential_power` | power and expected information to decision of those boundaries (recursive integration) |

Every function takes plain numbers or numpy arrays (so simulations vectorise) and is pinned
against statsmodels or scipy in `tests/experiments/stats/`. See docs/statistics.md.
"""
