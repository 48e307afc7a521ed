"""The shape of a benchmark run's results: plain dataclasses that become the JSON file.

Every figure is a `Metric`; a scenario compares its metrics by ratio to a reference measured in
the same run (a ceiling, a peer or another filesvc figure), because absolute numbers drift on a
shared machine while ratios hold.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["filesvc", "ceiling", "peer", "reference"]
Op = Literal[">=", "<", "<="]


@dataclass
class Metric:
    """One measured figure (the median of `runs`), or `value=None` when it could not be measured."""

    subject: str
    kind: Kind
    value: float | None
    unit: str
    runs: list[float] = field(default_factory=list)
    latency_ms: dict[str, float] | None = None
    ratios: dict[str, float | None] = field(default_factory=dict)  # reference subject -> ratio
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """The first ratio set: to the scenario's main ceiling."""
        return next(iter(self.ratios.values()), None)


@dataclass
class Target:
    """A goal from the issue, checked on figures of the same run: `value op threshold`."""

    name: str
    value: float | None
    op: Op
    threshold: float
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        if self.op == ">=":
            return self.value >= self.threshold
        if self.op == "<":
            return self.value < self.threshold
        return self.value <= self.threshold


@dataclass
class RssStats:
    """Resident memory of one process tree during a scenario, in MiB; `samples` are (s, MiB)."""

    start_mib: float
    peak_mib: float
    end_mib: float
    samples: list[tuple[float, float]] = field(default_factory=list)

    @property
    def growth_mib(self) -> float:
        """End minus start: what the scenario left behind."""
        return self.end_mib - self.start_mib

    @property
    def peak_growth_mib(self) -> float:
        """Peak minus start: the most the scenario ever added."""
        return self.peak_mib - self.start_mib


@dataclass
class ScenarioResult:
    name: str
    title: str
    metrics: list[Metric] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    rss: dict[str, RssStats] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    def metric(self, subject: str) -> Metric | None:
        for m in self.metrics:
            if m.subject == subject:
                return m
        return None

    def add(self, metric: Metric) -> Metric:
        self.metrics.append(metric)
        return metric

    def relate(self, subject: str, reference: str, *, inverse: bool = False) -> float | None:
        """Add `subject`'s ratio to `reference` (value / reference, or reference / value when
        lower is better, so that a ratio above 1 always means "subject is better")."""
        m, r = self.metric(subject), self.metric(reference)
        if m is None or r is None:
            return None
        ratio = None
        if m.value is not None and r.value is not None and r.value != 0 and m.value != 0:
            ratio = (r.value / m.value) if inverse else (m.value / r.value)
        m.ratios[reference] = ratio
        return ratio


@dataclass
class PeerStatus:
    name: str
    status: Literal["ok", "unavailable", "skipped"]
    detail: str = ""


@dataclass
class RunResult:
    started: str
    quick: bool
    argv: list[str]
    machine: dict[str, str] = field(default_factory=dict)
    peers: dict[str, PeerStatus] = field(default_factory=dict)
    scenarios: list[ScenarioResult] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        out = dataclasses.asdict(self)
        scenarios = out["scenarios"]
        assert isinstance(scenarios, list)
        for raw, sc in zip(scenarios, self.scenarios, strict=True):
            for t_raw, t in zip(raw["targets"], sc.targets, strict=True):
                t_raw["met"] = t.met
            for name, stats in sc.rss.items():
                raw["rss"][name]["growth_mib"] = stats.growth_mib
                raw["rss"][name]["peak_growth_mib"] = stats.peak_growth_mib
        return out


def percentiles_ms(latencies_s: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds of a list of durations in seconds."""
    if not latencies_s:
        return {}
    xs = sorted(latencies_s)

    def pick(q: float) -> float:
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] * 1000.0

    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": xs[-1] * 1000.0}


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None
