"""How sure an epoch's shares are when only some of its steps were measured.

Why: measuring a step costs K forward passes of the probe set, so a run that should cost little
measures a random sample of its steps (``sgdwalk.sampling``). An epoch's interior-minimum share
and barrier count are then estimates of the whole epoch's, and are shown with a 95% interval
("interior-min 77% ±6%, 41 of 64 steps measured"). When every step was measured the share is the
epoch's own, and the interval is that one value.

The interval is Wilson's score interval for a proportion, with the finite-population correction
for a sample drawn without replacement: m measured of the N steps an epoch took, k of them with
the property. The half-width shrinks by sqrt((N − m)/(N − 1)) as the sample covers more of the
epoch and is zero at m = N. (Wilson rather than the normal approximation: it stays inside [0, 1]
and keeps near its nominal coverage for shares close to 0 or 1 and for small samples; tested by
simulation in ``tests/test_shares.py``.) Plain Python: no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval


@dataclass(frozen=True)
class Share:
    """k of m sampled steps out of the N an epoch took: the share, and its 95% interval."""

    k: int
    m: int
    n: int
    value: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def share(k: int, m: int, n: int, z: float = Z95) -> Share:
    """The share k/m of a sample of m of n steps, and its interval for the share among all n.

    m = 0 (nothing measured): NaN with the interval [0, 1]. m = n: exact, low = high = k/n.
    """
    if not 0 <= k <= m <= max(n, m):
        raise ValueError(f"need 0 <= k <= m, got k={k}, m={m}")
    n = max(n, m)
    if m == 0:
        return Share(k, m, n, math.nan, 0.0, 1.0)
    p = k / m
    fpc = math.sqrt((n - m) / (n - 1)) if n > 1 else 0.0
    if fpc == 0.0:
        return Share(k, m, n, p, p, p)
    z2 = (z * fpc) ** 2  # the corrected z: Wilson's interval with variance p(1−p)/m · fpc²
    centre = (p + z2 / (2 * m)) / (1 + z2 / m)
    half = (z * fpc / (1 + z2 / m)) * math.sqrt(p * (1 - p) / m + z2 / (4 * m * m))
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    return Share(k, m, n, p, min(low, p), max(high, p))


def clustered(k: list[int], m: list[int], n: int, z: float = Z95) -> Share:
    """The share among n steps from clusters of consecutive measured steps (bursts): k[i] of
    m[i] steps of burst i have the property. Consecutive steps are alike, so a burst counts for
    less than its length: the ratio estimator's variance between bursts gives an effective sample
    size n_eff = p(1 − p)/var, and Wilson's interval is taken at it (Korn and Graubard's way for
    clustered samples; with bursts of one step it is ``share``'s)."""
    total_k, total_m = sum(k), sum(m)
    c = len(m)
    if total_m == 0 or c <= 1 or total_m >= n:
        return share(total_k, total_m, n, z)
    p = total_k / total_m
    mean_m = total_m / c
    var = sum((ki - p * mi) ** 2 for ki, mi in zip(k, m, strict=True)) / (c * (c - 1) * mean_m**2)
    spread = var > 0 and p not in (0.0, 1.0)  # none seen: as sure as its bursts, no surer
    n_eff = min(total_m, max(1.0, p * (1 - p) / var)) if spread else c
    rounded = max(1, round(n_eff))
    s = share(round(p * rounded), rounded, max(rounded, round(n * rounded / total_m)), z)
    return Share(total_k, total_m, n, p, min(s.low, p), max(s.high, p))


def count_interval(k: int, m: int, n: int) -> tuple[float, float, float]:
    """Of n steps, how many have the property (barriers in an epoch): the estimate n·k/m and
    its 95% interval, from k of m sampled steps."""
    s = share(k, m, n)
    return n * s.value, n * s.low, n * s.high
