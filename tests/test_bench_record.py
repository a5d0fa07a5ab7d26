"""`python -m bench --record` files every benchmark's figures in bench/RESULTS.md."""

from bench.__main__ import BENCHES, bench_of


def test_every_benchmark_figure_has_its_row_owner():
    # A figure whose name no benchmark claims would be dropped from RESULTS.md.
    samples = {
        "intake": "intake.sqlite.plain.throughput",
        "calls": "calls.total",
        "drain": "drain.seconds",
        "growth": "growth.sqlite.api.first_page_ms",
        "loginflood": "loginflood.sqlite.split.intake_p50_login_flood_ms",
    }
    assert set(samples) == set(BENCHES)
    for bench, figure in samples.items():
        assert bench_of(f"| {figure} | 1.00 ms |") == bench
