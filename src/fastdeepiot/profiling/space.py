"""Samplers over a family's configuration space.

* `sweep_configs`: one width parameter over every value of its range, the rest fixed: this is where the
  staircase shows. Values come in coarse-to-fine order (0, 1/2, 1/4, 3/4, ... of the range), so a sweep
  cut short by the time budget still covers its whole range evenly.
* `random_configs`: scrambled Sobol points over the whole space (low-discrepancy: fewer samples cover
  the space evenly), repaired into valid configurations.
* `region_configs`: random points near a given configuration, for adaptive resampling where the time
  model's error is highest.

Every sampler keeps configurations under a cost cap (`MAX_FLOPS`, `MAX_BYTES`) so that one
measurement stays in the tens of milliseconds on a small CPU.
"""

from __future__ import annotations

import bisect
import math
from typing import Callable, Iterator

import numpy as np

from fastdeepiot.families import FAMILIES, LayerConfig, get_family

MAX_FLOPS = 3e8
MAX_BYTES = 48e6


def coarse_to_fine(n: int) -> list[int]:
    """Indices 0..n-1 in van der Corput order: every prefix is spread evenly over the range."""
    if n <= 0:
        return []
    bits = max(1, math.ceil(math.log2(n)))
    seen, order = set(), []
    for i in range(2**bits):
        j = int(format(i, f"0{bits}b")[::-1], 2)
        if j < n and j not in seen:
            seen.add(j)
            order.append(j)
    order.remove(n - 1)  # the top of the range comes second, right after the bottom
    order.insert(min(1, len(order)), n - 1)
    return order


def within_cap(config: LayerConfig) -> bool:
    f = config.features()
    moved = f["input_bytes"] + f["output_bytes"] + f["weight_bytes"]
    return f["flops"] <= MAX_FLOPS and moved <= MAX_BYTES


# width -> the count it must be a multiple of (GroupNorm's channels and groups, attention's embedding
# width and heads): random points are rounded up to a multiple instead of being rejected
_MULTIPLE_OF = {"groupnorm": ("channels", "groups"), "mha": ("embed_dim", "heads"),
                "transformer_encoder": ("d_model", "heads")}


# the group counts of `_repair`'s few-group convolutions, and the channels per group of its group-width ones
# (ResNeXt: 4; RegNetX/Y: 8-64)
FEW_GROUPS = (2, 4, 8, 16)
GROUP_WIDTHS = (4, 8, 16, 32)


def _repair(family: str, p: dict, u_groups: float) -> dict | None:
    """Turn an arbitrary point of the space into a valid configuration (or None)."""
    fam = get_family(family)
    if family in ("conv1d", "conv2d"):
        widest = fam.space["in_channels"][-1]  # a multiple of the groups at most this
        # groups: a third plain, a third depthwise, a sixth a few groups (channels rounded up to a multiple)
        # and a sixth ResNeXt/RegNet-style group-width convolutions (in = out channels, GROUP_WIDTHS[i]
        # channels per group, so 8-64 groups: regnetx_200mf's 46 groups of 8 were priced 1.9x over on
        # onnxruntime-cpu by a model whose profile held no convolution of more than 16 groups but depthwise)
        if u_groups < 1 / 3:
            p["groups"] = 1
        elif u_groups < 2 / 3:
            p["groups"] = p["out_channels"] = p["in_channels"]
        elif u_groups < 5 / 6:
            g = FEW_GROUPS[min(len(FEW_GROUPS) - 1, int((u_groups - 2 / 3) * 6 * len(FEW_GROUPS)))]
            p["groups"] = g
            p["in_channels"] = min(widest // g * g, int(math.ceil(p["in_channels"] / g) * g))
            p["out_channels"] = min(widest // g * g, int(math.ceil(p["out_channels"] / g) * g))
        else:
            gw = GROUP_WIDTHS[min(len(GROUP_WIDTHS) - 1, int((u_groups - 5 / 6) * 6 * len(GROUP_WIDTHS)))]
            c = min(widest // gw * gw, max(4 * gw, int(math.ceil(p["in_channels"] / gw) * gw)))  # at least 4 groups
            p["in_channels"] = p["out_channels"] = c
            p["groups"] = c // gw
    elif family in _MULTIPLE_OF:  # issue 17 families: a width that must be a multiple of a count
        key, of = _MULTIPLE_OF[family]
        values = fam.space[key]
        p[key] = min(values[-1] // p[of] * p[of], int(math.ceil(p[key] / p[of]) * p[of]))
    try:
        p = fam.check(p)
    except ValueError:
        return None
    return p


def _pick(values: list, u: float, name: str):
    """Map u in [0, 1) to a value. Widths and sizes (long ordered ranges) are drawn log-uniformly:
    networks for small devices are made of narrow layers, and a uniform draw over 1..256 almost never
    yields the small, cheap layers whose fixed costs dominate small networks. Batch is 1 half of the
    time (the deployment case), else log-uniform over the larger sizes."""
    if name == "batch":
        return values[0] if u < 0.5 else values[min(len(values) - 1, 1 + int((u - 0.5) * 2 * (len(values) - 1)))]
    if isinstance(values[0], (int, float)) and len(values) > 16 and values[0] >= 1:
        lo, hi = math.log(values[0]), math.log(values[-1] + 1)
        v = math.exp(lo + u * (hi - lo))
        i = min(len(values) - 1, max(0, bisect.bisect_right(values, v) - 1))  # the space's values are sorted
        return values[i]
    return values[min(len(values) - 1, int(u * len(values)))]


# Share of random configurations whose widths are all rounded to a multiple of 16 / of 8 (and not
# below it). The networks people deploy use such widths, and that is where a backend's fast path is:
# on onnxruntime-cpu a 16->16 3x3 convolution at 32x32 takes 53 us, while a tree that had seen almost
# no configuration with both widths aligned (1 in 256 of log-uniform draws) priced it at 76 us.
ALIGNED_SHARE = {16: 0.2, 8: 0.2}


def _align(family: str, p: dict, u: float) -> dict:
    """Round every width parameter to a multiple of 16 or 8 for the ALIGNED_SHARE of u."""
    quantum, edge = None, 0.0
    for q, share in ALIGNED_SHARE.items():
        edge += share
        if u < edge:
            quantum = q
            break
    if quantum is None:
        return p
    fam = get_family(family)
    for k in fam.width_params:
        values = fam.space[k]
        target = max(quantum, int(round(p[k] / quantum)) * quantum)
        p[k] = _nearest(values, target)
    return p


def _nearest(values: list, target: float):
    """The value of an ascending list nearest to target (the smaller one on a tie)."""
    return values[_nearest_index(values, target)]


def _nearest_index(values: list, target: float) -> int:
    """The index of `_nearest`'s value: a bisection, where a scan over a width space of 1..4096 cost seconds
    per family when a profile starts."""
    i = bisect.bisect_left(values, target)
    if i == 0:
        return 0
    if i == len(values):
        return len(values) - 1
    return i if values[i] - target < target - values[i - 1] else i - 1


def random_configs(family: str, n: int, seed: int = 0) -> list[LayerConfig]:
    """n valid configurations under the cost cap from a scrambled Sobol sequence (deterministic);
    `ALIGNED_SHARE` of them with their widths rounded to multiples of 16 or 8."""
    return list(iter_random_configs(family, n, seed))


def iter_random_configs(family: str, n: int, seed: int = 0) -> Iterator[LayerConfig]:
    """`random_configs(family, n, seed)` one at a time, in the same order, each made when it is asked for: a
    profile starts measuring at once instead of first drawing all n of every family."""
    from scipy.stats import qmc

    fam = get_family(family)
    names = list(fam.space)
    sampler = qmc.Sobol(d=len(names) + 2, scramble=True, seed=seed)
    made = 0
    seen: set[str] = set()
    for _ in range(50):  # rounds of candidates; rejection keeps the cap
        pts = sampler.random(max(64, 2 ** math.ceil(math.log2(max(2, 4 * n)))))
        for u in pts:
            p = {k: _pick(fam.space[k], float(u[i]), k) for i, k in enumerate(names)}
            p = _align(family, p, float(u[-2]))
            p = _repair(family, p, float(u[-1]))
            if p is None:
                continue
            c = LayerConfig(family, p)
            if c.key in seen or not within_cap(c):
                continue
            seen.add(c.key)
            yield c
            made += 1
            if made == n:
                return


# the kernels most convolutions of published networks have, stride 1: the sweeps of a convolution family start from
# them in turn (session 25: drawn at random, every 10-minute profile's second conv2d sweep was a 7x7 stride-2
# convolution of a 4x4 map, a fifth of all conv2d rows, while 3x3 convolutions had 3-4% of them)
TYPICAL_KERNELS = (3, 1)


def base_configs(family: str, seed: int, k: int) -> list[LayerConfig]:
    """Cheap, typical configurations that sweeps start from: batch 1, plain (groups 1); a convolution with the
    kernels of `TYPICAL_KERNELS` in turn, stride 1. A family with a string parameter (an activation's kind, a
    pool's mode) gets at least one base per level of the first one, in turn: every kind is swept, not only those
    a random draw picked (session 23: with 14 activation kinds and two bases, the two swept kinds had 64 rows
    each in a 6-minute profile and five others 7-12)."""
    rng = np.random.default_rng(seed)
    fam = get_family(family)
    levels = next(([(name, lv) for lv in vals] for name, vals in fam.space.items() if isinstance(vals[0], str)), [])
    k = max(k, len(levels))
    out: list[LayerConfig] = []
    for c in random_configs(family, 40 * k, seed=seed + 7919):
        p = dict(c.params)
        if "batch" in p:
            p["batch"] = 1
        if "groups" in p:
            p["groups"] = 1
        if family in ("conv1d", "conv2d"):
            p["kernel"], p["stride"] = TYPICAL_KERNELS[len(out) % len(TYPICAL_KERNELS)], 1
        if levels:
            name, level = levels[len(out) % len(levels)]
            p[name] = level
        try:
            p = fam.check(p)
        except ValueError:
            continue
        c2 = LayerConfig(family, p)
        if within_cap(c2) and all(c2 != o for o in out):
            out.append(c2)
        if len(out) == k:
            break
    rng.shuffle(out)
    return out


def sweep_configs(base: LayerConfig, param: str) -> list[LayerConfig]:
    """Every value of `param` (coarse-to-fine), others from `base`; invalid/over-cap points skipped."""
    fam = base.family_obj
    values = fam.space[param]
    out = []
    for i in coarse_to_fine(len(values)):
        p = dict(base.params)
        p[param] = values[i]
        try:
            p = fam.check(p)
        except ValueError:
            continue
        c = LayerConfig(base.family, p)
        if within_cap(c):
            out.append(c)
    return out


def region_configs(center: LayerConfig, n: int, seed: int = 0, spread: float = 0.15) -> list[LayerConfig]:
    """n valid configurations near `center`: each ordered parameter moved by up to `spread` of its
    range (in index space), categorical ones kept."""
    fam = center.family_obj
    rng = np.random.default_rng(seed)
    out: list[LayerConfig] = []
    seen = {center.key}
    for _ in range(20 * n):
        p = dict(center.params)
        for k, values in fam.space.items():
            if isinstance(values[0], str) or k == "groups":
                continue
            i = _nearest_index(values, p[k])  # a value outside the space starts from the nearest
            d = int(round(rng.uniform(-spread, spread) * len(values)))
            p[k] = values[min(len(values) - 1, max(0, i + d))]
        if p.get("groups", 1) > 1 and p["groups"] == center.params.get("in_channels"):
            p["groups"] = p["out_channels"] = p["in_channels"]  # keep depthwise depthwise
        elif "groups" in p and "in_channels" in p and (p["in_channels"] % p["groups"] or p["out_channels"] % p["groups"]):
            p["groups"] = 1
        if center.family in _MULTIPLE_OF:  # issue 17: keep a width a multiple of its count
            key, of = _MULTIPLE_OF[center.family]
            values = fam.space[key]
            p[key] = min(values[-1] // p[of] * p[of], max(p[of], int(math.ceil(p[key] / p[of]) * p[of])))
        try:
            p = fam.check(p)
        except ValueError:
            continue
        c = LayerConfig(center.family, p)
        if c.key not in seen and within_cap(c):
            seen.add(c.key)
            out.append(c)
            if len(out) == n:
                break
    return out


def family_stream(family: str, seed: int, n_bases: int = 2,
                  path: Callable[[LayerConfig], str | None] | None = None) -> Iterator[tuple[LayerConfig, str]]:
    """The order in which one family is profiled: random points and sweep points alternate (half
    each); the sweeps themselves take turns, so a short budget sees a bit of every sweep.

    `path` (configuration -> the code path the backend runs it through, `graph.paths.kernel_path`) balances
    the random points over the paths: every other one is a point of the path with the fewest random points
    so far (`PathBalancer`)."""
    fam = get_family(family)
    randoms = iter_random_configs(family, 4000, seed=seed)
    if path is not None:
        randoms = iter(PathBalancer(randoms, path))
    sweeps = [iter(sweep_configs(b, prm)) for b in base_configs(family, seed, n_bases)
              for prm in fam.width_params]
    turn = 0
    while True:
        got_any = False
        c = next(randoms, None)
        if c is not None:
            got_any = True
            yield c, "random"
        for _ in range(len(sweeps)):
            if not sweeps:
                break
            s = sweeps[turn % len(sweeps)]
            turn += 1
            c = next(s, None)
            if c is not None:
                got_any = True
                yield c, "sweep"
                break
        if not got_any:
            return


class PathBalancer:
    """Random configurations balanced over the backend's code paths: every other one is the next of the random
    stream, the others the next of the path that has had the fewest so far (looking up to `LOOKAHEAD` points
    ahead for one; the points passed over are kept, in order, for the turns that follow the stream).

    Why (session 27): a path a backend takes only in a corner of the space gets a corner's share of the random
    points. On torch-cpu 78% of random Conv2d points run through oneDNN and 2-3% each through ATen's slow
    narrow-GEMM, matrix-vector and oneDNN's grouped-GEMM paths, the paths of the late layers of image networks
    (a 1x1 convolution on a 2x2 map runs at a fifth of the speed per FLOP of one on a 4x4 map): a 10-minute
    profile held 6-7 rows of each, under the 20 a path needs for a subtree of its own (`ModelTree`'s
    partition), and priced such layers of held-out networks at 0.02-0.5x their time. Balanced, each path
    gets about a sixth of the random points and the dominant one still half."""

    LOOKAHEAD = 1000

    def __init__(self, configs: Iterator[LayerConfig], path: Callable[[LayerConfig], str | None]):
        self._configs, self._path = configs, path
        self._pending: list[tuple[LayerConfig, str]] = []  # drawn, not yet handed out, in draw order
        self._count: dict[str, int] = {}  # random points handed out per path (a path seen in a draw: 0)
        self._dry: set[str] = set()  # paths the last lookahead did not find

    def _draw(self) -> bool:
        c = next(self._configs, None)
        if c is None:
            return False
        p = self._path(c) or ""
        self._count.setdefault(p, 0)
        self._pending.append((c, p))
        return True

    def _take(self, i: int) -> LayerConfig:
        c, p = self._pending.pop(i)
        self._count[p] += 1
        return c

    def _of_path(self, want: str) -> LayerConfig | None:
        i = next((i for i, (_, p) in enumerate(self._pending) if p == want), None)
        looked = 0
        while i is None and looked < self.LOOKAHEAD and self._draw():
            looked += 1
            if self._pending[-1][1] == want:
                i = len(self._pending) - 1
        return None if i is None else self._take(i)

    def __iter__(self) -> Iterator[LayerConfig]:
        if not self._draw():
            return
        if self._pending[0][1] == "":  # a family without path rules: the stream as it is, nothing drawn ahead
            yield self._take(0)
            yield from self._configs
            return
        for _ in range(self.LOOKAHEAD // 4):  # look ahead once, so that the rare paths are known from the start
            if not self._draw():
                break
        turn = 0
        while self._pending or self._draw():
            turn += 1
            if turn % 2 or len(self._count) == 1:
                yield self._take(0)
                continue
            got = None
            for want in sorted((p for p in self._count if p not in self._dry), key=lambda p: (self._count[p], p)):
                got = self._of_path(want)
                if got is not None:
                    break
                self._dry.add(want)  # (not looked for again: the stream has none within reach)
            if got is None:
                got = self._take(0) if self._pending else None
            if got is None:
                return
            yield got


def all_families() -> list[str]:
    return list(FAMILIES)
