from __future__ import annotations

from agent.config import LimitsSection
from agent.governor import Limits, ResourceGovernor
from agent.procinfo import Usage


class Machine:
    """A process whose CPU time and memory the test sets, on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.cpu = 0.0
        self.rss = 50 << 20

    def clock(self) -> float:
        return self.now

    def usage(self) -> Usage:
        return Usage(self.cpu, self.rss)

    def run(self, seconds: float, busy_share: float) -> None:
        self.now += seconds
        self.cpu += seconds * busy_share


def governor(m: Machine, **limits: object) -> ResourceGovernor:
    return ResourceGovernor(Limits(**limits), usage=m.usage, clock=m.clock, sample_every=0.5)  # type: ignore[arg-type]


def test_cpu_above_the_ceiling_over_the_window_sheds_and_below_it_does_not() -> None:
    m = Machine()
    g = governor(m, cpu_percent=25.0, memory_bytes=None, window=10.0)
    assert g.over() is None
    for _ in range(20):
        m.run(0.5, 0.10)
        assert g.over() is None
    for _ in range(40):
        m.run(0.5, 0.90)
        g.over()
    assert g.over() == "cpu" and g.cpu_percent > 80
    for _ in range(40):  # the window forgets the burst
        m.run(0.5, 0.01)
        g.over()
    assert g.over() is None and g.cpu_percent < 5


def test_memory_above_the_ceiling_sheds_before_cpu_is_considered() -> None:
    m = Machine()
    g = governor(m, cpu_percent=25.0, memory_bytes=60 << 20)
    assert g.over() is None
    m.rss = 70 << 20
    m.run(1, 0.0)
    assert g.over() == "memory"


def test_usage_is_sampled_at_most_every_half_second() -> None:
    m = Machine()
    calls = 0

    def usage() -> Usage:
        nonlocal calls
        calls += 1
        return m.usage()

    g = ResourceGovernor(Limits(), usage=usage, clock=m.clock, sample_every=0.5)
    for _ in range(100):
        g.over()
        m.now += 0.01
    assert calls == 2


def test_limits_come_from_the_agent_configuration_and_zero_means_no_ceiling() -> None:
    assert Limits.from_config(LimitsSection(cpu_percent=30, memory="64MiB", window="5s")) == Limits(30.0, 64 << 20, 5.0)
    assert Limits.from_config(LimitsSection(cpu_percent=0, memory=0)) == Limits(None, None, 10.0)


def test_a_real_process_is_measured() -> None:
    g = ResourceGovernor(Limits(cpu_percent=None, memory_bytes=1))
    assert g.over() == "memory" and g.rss_bytes > 1 << 20
