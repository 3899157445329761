"""Which assignment to try next: grid, random, or bayes (optuna's TPE).

Samplers are deterministic given the sweep's `seed` and what was already measured, which is what
makes resume work: the grid and the random sequence are regenerated and the assignments already
measured are skipped; TPE is re-seeded with every stored result before it suggests more.
"""

from __future__ import annotations

import math
from typing import Any

from perfbench.errors import InputError
from perfbench.sweep.spec import ParamSpec, Sweep, round_sig


class Sampler:
    """`ask()` the next assignment (None when the space is exhausted), `tell()` how it went.
    `may_repeat`: whether it can suggest an assignment it suggested before."""

    may_repeat = False

    def ask(self) -> dict[str, Any] | None:  # pragma: no cover - interface
        raise NotImplementedError

    def tell(self, params: dict[str, Any], value: float | None) -> None:
        """`value` None: the trial failed or was infeasible."""


class GridSampler(Sampler):
    """Every combination, in the order of the spec (last parameter varies fastest)."""

    def __init__(self, sweep: Sweep):
        self._points = iter(sweep.grid_points())

    def ask(self) -> dict[str, Any] | None:
        return next(self._points, None)


def _sample(p: ParamSpec, rng: Any) -> Any:
    if p.discrete:
        return p.values[int(rng.integers(len(p.values)))]
    lo, hi = float(p.min), float(p.max)
    d = p.distribution
    if d == "int_uniform":
        return int(rng.integers(int(lo), int(hi) + 1))
    if d == "int_log_uniform":
        return int(min(hi, max(lo, round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))))
    if d == "log_uniform":
        return round_sig(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return round_sig(rng.uniform(lo, hi))


class RandomSampler(Sampler):
    """Discrete spaces: a seeded permutation of the grid (no repeats). With ranges: independent
    seeded draws, repeats skipped."""

    def __init__(self, sweep: Sweep):
        import numpy as np

        self.sweep = sweep
        self.rng = np.random.default_rng(sweep.spec.seed)
        self._perm = None
        if sweep.discrete:
            points = sweep.grid_points()
            self._perm = iter([points[i] for i in self.rng.permutation(len(points))])
        self._seen: set[str] = set()
        self.may_repeat = not sweep.discrete

    def ask(self) -> dict[str, Any] | None:
        if self._perm is not None:
            return next(self._perm, None)
        for _ in range(1000):
            params = {n: _sample(p, self.rng) for n, p in self.sweep.params.items()}
            key = self.sweep.trial_key(params)
            if key not in self._seen:
                self._seen.add(key)
                return params
        return None


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise InputError("method: bayes needs optuna, which is not installed: "
                         "pip install 'perfbench[sweep]' (the `sweep` extra)") from None
    return optuna


class BayesSampler(Sampler):
    """optuna's TPE; `constant_liar` keeps parallel suggestions (--jobs > 1) apart."""

    may_repeat = True

    def __init__(self, sweep: Sweep, history: list[tuple[dict[str, Any], float | None]]):
        optuna = self.optuna = import_optuna()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.sweep = sweep
        self.dists = {n: self._dist(p) for n, p in sweep.params.items()}
        n = sweep.spec.budget.trials or sweep.planned_trials()
        import warnings

        with warnings.catch_warnings():  # constant_liar is "experimental" in some optuna versions
            warnings.simplefilter("ignore")
            sampler = optuna.samplers.TPESampler(seed=sweep.spec.seed, constant_liar=True,
                                                 n_startup_trials=max(2, min(10, n // 3)))
        self.study = optuna.create_study(direction=sweep.goal, sampler=sampler)
        for params, value in history:
            self._add(params, value)
        self._asked: dict[str, Any] = {}

    def _dist(self, p: ParamSpec) -> Any:
        d = self.optuna.distributions
        if p.discrete:
            return d.CategoricalDistribution(list(p.values))
        if p.distribution == "int_uniform":
            return d.IntDistribution(int(p.min), int(p.max))
        if p.distribution == "int_log_uniform":
            return d.IntDistribution(int(p.min), int(p.max), log=True)
        return d.FloatDistribution(float(p.min), float(p.max), log=p.distribution == "log_uniform")

    def _add(self, params: dict[str, Any], value: float | None) -> None:
        ft = self.optuna.trial
        try:
            t = ft.create_trial(params=params, distributions=self.dists,
                                value=value if value is not None else None,
                                state=ft.TrialState.COMPLETE if value is not None else ft.TrialState.FAIL)
        except ValueError:  # a stored assignment outside today's space: nothing to learn from it
            return
        self.study.add_trial(t)

    def ask(self) -> dict[str, Any] | None:
        t = self.study.ask(self.dists)
        params = {n: t.params[n] for n in self.sweep.param_names}
        for n, p in self.sweep.params.items():
            if not p.discrete and not p.is_int:
                params[n] = round_sig(params[n])
        key = self.sweep.trial_key(params)
        self._asked.setdefault(key, []).append(t)
        return params

    def tell(self, params: dict[str, Any], value: float | None) -> None:
        """Every asked trial with this assignment gets the result: one that repeated an assignment
        still in flight would otherwise stay RUNNING in the study for good."""
        for t in self._asked.pop(self.sweep.trial_key(params), []):
            if value is None:
                self.study.tell(t, state=self.optuna.trial.TrialState.FAIL)
            else:
                self.study.tell(t, value)


def make_sampler(sweep: Sweep, history: list[tuple[dict[str, Any], float | None]]) -> Sampler:
    """`history`: (params, metric or None) of every trial already measured."""
    if sweep.spec.method == "grid":
        return GridSampler(sweep)
    if sweep.spec.method == "random":
        return RandomSampler(sweep)
    return BayesSampler(sweep, history)
