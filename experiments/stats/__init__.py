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

Every function takes plain numbers or numpy arrays (so simulations vectorise) and is pinned
against statsmodels or scipy in `tests/experiments/test_stats_*.py`. See docs/statistics.md.
"""
