"""The model-based sweep mode: Optuna's TPE sampler, rebuilt from the trials' results at every ask.

Nothing of the search is kept: each ask builds an in-memory study from what the run folders and job rows say
(finished trials with their validation metric, pruned ones with their partial curve, running ones as
running so that `constant_liar` steers parallel asks apart) and asks it for one point. Deleting nothing,
pickling nothing: the experiment record and the run folders stay the only record. Importance of each swept
setting comes from the same rebuilt study (Optuna's fANOVA evaluator).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

N_STARTUP_MAX = 10  # random points before TPE models (Optuna's default) ...
N_STARTUP_MIN = 3  # ... but at most a third of a small budget, never fewer than this
IMPORTANCE_MIN_TRIALS = 30  # below this many finished trials importance is a rough guide only


@dataclass
class Told:
    """One trial as the sampler sees it: its settings, state and value (or partial curve)."""

    settings: dict[str, Any]
    state: str  # "complete", "pruned", "running", "failed"
    value: float | None = None
    curve: dict[int, float] = field(default_factory=dict)  # epoch (1-based) -> metric


def _optuna():
    """Optuna, quiet (imported only by the model-based mode)."""
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    return optuna


def distributions(axes: list, kinds: dict[str, type]) -> dict[str, Any]:
    """Each axis as an Optuna distribution: a list -> categorical; a range -> int or float (log or not)."""
    dist = _optuna().distributions
    out: dict[str, Any] = {}
    for a in axes:
        if a.values:
            out[a.name] = dist.CategoricalDistribution(list(a.values))
        elif kinds[a.name] is int:
            out[a.name] = dist.IntDistribution(math.ceil(a.lo), math.floor(a.hi), log=a.log)
        else:
            out[a.name] = dist.FloatDistribution(a.lo, a.hi, log=a.log)
    return out


def _params(settings: dict[str, Any], dists: dict[str, Any]) -> dict[str, Any] | None:
    """A trial's settings as values of the distributions (ranges clipped to their bounds); None if one is off."""
    out = {}
    for name, d in dists.items():
        if name not in settings:
            return None
        v = settings[name]
        if hasattr(d, "choices"):
            if v not in d.choices:
                return None
        else:
            v = min(max(v, d.low), d.high)
        out[name] = v
    return out


def study(told: list[Told], dists: dict[str, Any], seed: int, n_startup: int):
    """An in-memory maximising study holding `told` (TPE with constant_liar for the running ones)."""
    optuna = _optuna()
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=n_startup)
    s = optuna.create_study(direction="maximize", sampler=sampler)
    state = optuna.trial.TrialState
    states = {"complete": state.COMPLETE, "pruned": state.PRUNED, "running": state.RUNNING}
    for t in told:
        params = _params(t.settings, dists)
        if params is None or t.state not in states or (t.state == "complete" and t.value is None):
            continue
        s.add_trial(
            optuna.trial.create_trial(
                state=states[t.state],
                value=t.value if t.state == "complete" else None,
                params=params,
                distributions=dists,
                intermediate_values=t.curve,
            )
        )
    return s


def n_startup(budget: int) -> int:
    """Random points before TPE takes over, for a budget of trials."""
    return max(N_STARTUP_MIN, min(N_STARTUP_MAX, budget // 3))


def suggest(told: list[Told], dists: dict[str, Any], seed: int, budget: int) -> dict[str, Any]:
    """The next point to try, given every trial so far (the same trials and seed give the same point)."""
    s = study(told, dists, seed, n_startup(budget))
    return dict(s.ask(dists).params)


def importance(told: list[Told], dists: dict[str, Any]) -> dict[str, float]:
    """Each swept setting's share of the metric's variance over the finished trials (fANOVA; sums to 1);
    {} with fewer than 3 finished trials or when only one setting varies."""
    finished = [t for t in told if t.state == "complete" and t.value is not None]
    varied = {n: d for n, d in dists.items() if len({repr(t.settings.get(n)) for t in finished}) > 1}
    if len(finished) < 3 or not varied:
        return {}
    if len(varied) == 1:
        return dict.fromkeys(varied, 1.0)
    optuna = _optuna()
    s = study(finished, varied, 0, N_STARTUP_MAX)
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return {k: float(v) for k, v in optuna.importance.get_param_importances(s, evaluator=evaluator).items()}
