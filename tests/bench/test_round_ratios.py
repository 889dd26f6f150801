"""The benchmarks' round loop: ratios are per round, and a reference figure of 0 (under its
clock's tick in a smoke-sized run) leaves that round out instead of ending the benchmark."""

from __future__ import annotations

import math
from collections.abc import Callable

from bench.common import Figures, compare_in_rounds, median_ratio, whole_number


def constant(figures: list[Figures]) -> Callable[[int], tuple[Figures, str]]:
    """A target whose round ``n`` returns ``figures[n]``."""
    return lambda round_: (figures[round_], "")


def test_ratios_are_taken_within_each_round() -> None:
    samples, ratios = compare_in_rounds(
        {
            "reference": constant([{"ops": 100.0}, {"ops": 200.0}, {"ops": 50.0}]),
            "candidate": constant([{"ops": 50.0}, {"ops": 100.0}, {"ops": 25.0}]),
        },
        3,
        whole_number,
    )
    assert samples["candidate"]["ops"] == [50.0, 100.0, 25.0]
    assert ratios["candidate"]["ops"] == [0.5, 0.5, 0.5]
    assert "reference" not in ratios


def test_a_zero_reference_figure_leaves_its_round_out() -> None:
    _, ratios = compare_in_rounds(
        {
            "reference": constant([{"cpu": 0.0}, {"cpu": 0.2}, {"cpu": 0.0}]),
            "candidate": constant([{"cpu": 0.1}, {"cpu": 0.5}, {"cpu": 0.0}]),
        },
        3,
        whole_number,
    )
    assert median_ratio(ratios["candidate"]["cpu"]) == 2.5


def test_no_defined_ratio_gives_nan() -> None:
    assert math.isnan(median_ratio([math.nan, math.nan]))


def test_alternating_rounds_reverse_the_order_but_not_the_reference() -> None:
    calls: list[str] = []

    def target(name: str, figure: float) -> Callable[[int], tuple[Figures, str]]:
        def run(round_: int) -> tuple[Figures, str]:
            calls.append(f"{round_}{name}")
            return {"ops": figure}, ""

        return run

    _, ratios = compare_in_rounds(
        {"a": target("a", 100.0), "b": target("b", 25.0)}, 3, whole_number, alternate=True
    )
    assert calls == ["0a", "0b", "1b", "1a", "2a", "2b"]
    assert ratios["b"]["ops"] == [0.25, 0.25, 0.25]
