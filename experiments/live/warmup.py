"""The model arm's warm-up: the fallbacks of a rollout whose TF Serving pods are not ready yet, not counted.

A new model version's pods start after its experiment does (a `helm upgrade` changes both; Argo
Rollouts or Flagger then starts the pods), and until one is ready the routers' model arm has no
endpoint: every model-arm request is answered by the fallback (legacy). Those fallbacks are the
rollout's doing, not the model's, so neither the ramp controller nor the analysis service counts them.

The warm-up runs from the experiment's first look to the first look at which the model arm has
answered at least once itself (cumulative exposures above fallbacks), when that look still carries
fallbacks. While it runs nothing is decided (the controller holds, the service answers `wait`); after
it the analysis is of the history from that look on, every count rebased on it. An experiment whose
model answered without a fallback before its first answer (the usual case) is analysed whole, and so
is one whose warm-up lasts longer than `WARMUP_LIMIT_SECONDS`: a model arm that still only falls back
then is broken (a model that errs on every request looks the same in the counters), and its
guardrails roll it back. Until then its requests are answered by the fallback, so users see the
legacy system's answers, not errors.
"""

from __future__ import annotations

from experiments.live.history import BUCKET_FIELDS, ArmCounts, Buckets, History, HistoryError, Look


def _zeroed(counts: ArmCounts) -> ArmCounts:
    buckets = counts.buckets
    zero_buckets = None if buckets is None else Buckets(*((0,) * buckets.count for _ in BUCKET_FIELDS))
    return ArmCounts(0, 0, None if counts.failures is None else 0, 0, 0, counts.p99_latency_seconds, zero_buckets)


def _minus(counts: ArmCounts, base: ArmCounts) -> ArmCounts:
    """Counts gained since `base` (same arm, earlier look); the p99 gauge is the later one's."""
    buckets = None
    if counts.buckets is not None and base.buckets is not None:
        buckets = Buckets(*(tuple(a - b for a, b in zip(getattr(counts.buckets, f), getattr(base.buckets, f), strict=True))
                            for f in BUCKET_FIELDS))
    failures = None if counts.failures is None else counts.failures - (base.failures or 0)
    return ArmCounts(counts.exposures - base.exposures, counts.successes - base.successes, failures,
                     counts.errors - base.errors, counts.fallbacks - base.fallbacks, counts.p99_latency_seconds, buckets)


#: The longest warm-up not counted against the model: the chart's Canary `progressDeadlineSeconds`
#: (Flagger's and Argo Rollouts' own default is 600), by which pods that are not ready are the rollout
#: tool's failure. A model arm whose every request still falls back after that is a broken arm (a model
#: that errs on every request looks the same in the counters), so the history is analysed whole and
#: its guardrails roll back.
WARMUP_LIMIT_SECONDS = 900.0


def warmup(history: History, limit_seconds: float = WARMUP_LIMIT_SECONDS) -> tuple[bool, int | None]:
    """(warming up now, index of the look that ends the warm-up or None).

    The warm-up ends at the first look at which the model arm has answered itself (exposures above
    fallbacks), if that look has fallbacks; it is still on while every model-arm exposure so far fell
    back. One that lasts longer than `limit_seconds` is none (the history is analysed whole), and so
    is a history whose counters went down (the analyzer blocks it).
    """
    try:
        history.check_counters()
    except HistoryError:
        return False, None
    if not history.looks:
        return False, None
    first = history.looks[0].time
    for i, look in enumerate(history.looks):
        model = look.arms["model"]
        if model.exposures > model.fallbacks:
            if not model.fallbacks or (look.time - first).total_seconds() > limit_seconds:
                return False, None
            return i == len(history.looks) - 1, i
    last = history.looks[-1]
    return last.arms["model"].exposures > 0 and (last.time - first).total_seconds() <= limit_seconds, None


def after_warmup(history: History, end: int) -> History:
    """The history from look `end` on, every count rebased on that look (which becomes a look of zeros)."""
    base = history.looks[end]
    looks = [Look(base.time, base.weights, {arm: _zeroed(c) for arm, c in base.arms.items()})]
    looks += [Look(look.time, look.weights, {arm: _minus(c, base.arms[arm]) for arm, c in look.arms.items()})
              for look in history.looks[end + 1:]]
    return History(history.experiment, tuple(looks))


def counted_history(history: History, warming: bool, end: int | None) -> History:
    """What the analysis counts: the history after a finished warm-up, else all of it."""
    return after_warmup(history, end) if end is not None and not warming else history


def warming_reason(history: History, whole_decision: str) -> str:
    """Why nothing is decided while the model arm warms up (the last look's counts)."""
    model = history.looks[-1].arms["model"]
    answered = model.exposures - model.fallbacks
    if answered > 0:  # the look that ends the warm-up: the counting starts here
        return (f"the model arm started answering at this look ({answered} of its {model.exposures} requests answered "
                f"by the model, {model.fallbacks} fell back while no TF Serving pod of this version was ready); the "
                "analysis counts from this look on, without those fallbacks "
                f"(the analysis of the whole history said {whole_decision})")
    return (f"the model arm is warming up ({model.fallbacks} of its {model.exposures} requests fell back, none "
            "answered by the model): no TF Serving pod of this version was ready yet; these fallbacks are not "
            f"counted against the model until {WARMUP_LIMIT_SECONDS / 60:g} minutes have passed "
            f"(the analysis of the whole history said {whole_decision})")
