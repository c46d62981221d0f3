"""The recommendation of iplap bench: a real selection over a results file with known figures."""

from __future__ import annotations

import json
import shlex

import pytest

from iplap.benchmarks.recommend import best_within_budget, fastest_above, options, pareto_front, recommend
from iplap.cli import build_parser, main

#: (backend, precision, N, threads, s/frame, PSNR vs original; None: identical to it)
FIGURES = [
    ("onnxruntime", "fp32", 25, 2, 6.0, None),  # the original configuration itself
    ("openvino", "fp32", 25, 2, 5.9, 122.0),
    ("onnxruntime", "int8", 25, 2, 3.5, 41.4),  # slower and less accurate than openvino int8 N=25
    ("openvino", "int8", 25, 2, 3.3, 45.8),
    ("onnxruntime", "int8", 10, 2, 1.9, 28.0),  # dominated by openvino int8 N=10
    ("openvino", "int8", 10, 2, 1.7, 29.5),
    ("openvino", "int8", 5, 2, 1.3, 24.0),
    ("onnxruntime", "fp32", 10, 1, 5.0, 30.0),  # dominated
    ("onnxruntime", "int8", 5, 1, 2.5, 23.0),  # dominated
]


def _result(backend, precision, refs, threads, seconds, psnr, error=None) -> dict:
    bundle = "bundle" if precision == "fp32" else "bundle-int8"
    device = " CPU" if backend == "openvino" else ""
    return {"case": {"bundle": bundle, "precision": precision, "backend": backend, "device": "CPU", "refs": refs,
                     "threads": threads},
            "label": f"{backend}{device} {precision} N={refs} t={threads}",
            "seconds_per_frame": seconds, "error": error, "identical_to_original": psnr is None,
            "psnr_vs_original": psnr, "ssim_vs_original": 1.0 if psnr is None else 0.9}


@pytest.fixture
def results() -> list[dict]:
    rows = [_result(*f) for f in FIGURES]
    # A failed configuration is never chosen, however fast it claims to be.
    rows.append(_result("openvino", "int8", 5, 1, 0.1, 50.0, error="OpenVINO cannot compile flow_head.xml"))
    # Nor one that was not scored against the original configuration.
    rows.append({**_result("openvino", "fp32", 5, 1, 0.2, 60.0), "psnr_vs_original": None})
    return rows


def _names(chosen) -> list[tuple]:
    return [(o.backend, o.precision, o.refs, o.threads) for o in chosen]


def test_pareto_front_keeps_only_the_undominated(results):
    front = pareto_front(options(results))
    assert _names(front) == [("openvino", "int8", 5, 2), ("openvino", "int8", 10, 2), ("openvino", "int8", 25, 2),
                             ("openvino", "fp32", 25, 2), ("onnxruntime", "fp32", 25, 2)]
    times = [o.seconds_per_frame for o in front]
    assert times == sorted(times)


@pytest.mark.parametrize("budget, expected", [
    (2.0, ("openvino", "int8", 10, 2)),
    (3.4, ("openvino", "int8", 25, 2)),
    (3.3, ("openvino", "int8", 25, 2)),  # the budget is inclusive
    (5.95, ("openvino", "fp32", 25, 2)),
    (100.0, ("onnxruntime", "fp32", 25, 2)),  # identical to the original beats 122 dB
])
def test_most_accurate_within_a_budget(results, budget, expected):
    assert _names([best_within_budget(options(results), budget)]) == [expected]


def test_fastest_above_a_psnr_floor(results):
    choices = options(results)
    assert _names([fastest_above(choices, 40.0)]) == [("openvino", "int8", 25, 2)]
    assert _names([fastest_above(choices, 29.0)]) == [("openvino", "int8", 10, 2)]
    assert _names([fastest_above(choices, 500.0)]) == [("onnxruntime", "fp32", 25, 2)]


def test_accuracy_within_the_tables_resolution_is_a_tie_that_the_faster_wins(results):
    # As onnxruntime and OpenVINO fp32 at the same N: 1e-4 dB apart, float rounding only.
    twins = results + [_result("onnxruntime", "fp32", 10, 2, 1.63, 67.4207), _result("openvino", "fp32", 10, 2, 1.50,
                                                                                        67.4206)]
    assert _names([best_within_budget(options(twins), 2.0)]) == [("openvino", "fp32", 10, 2)]
    front = _names(pareto_front(options(twins)))
    assert ("openvino", "fp32", 10, 2) in front and ("onnxruntime", "fp32", 10, 2) not in front


def test_nothing_fits_names_the_nearest(results):
    out = recommend(results, budget=1.0)
    assert out["choice"] is None
    assert out["nearest"]["label"] == "openvino CPU int8 N=5 t=2"


def test_bench_from_results_prints_valid_run_flags(results, tmp_path, capsys):
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps({"results": results}))
    assert main(["bench", "--from", str(saved), "--budget", "2"]) == 0
    out = capsys.readouterr().out
    assert "openvino CPU int8 N=10 t=2" in out
    command = next(line.strip() for line in out.splitlines() if line.strip().startswith("iplap run "))
    args = build_parser().parse_args(shlex.split(command)[1:])  # flags that iplap run accepts
    assert (args.command, args.backend, args.refs, args.threads, str(args.bundle)) == \
        ("run", "openvino", 10, 2, "bundle-int8")
    # The front follows, one row per configuration on it.
    assert out.count("| openvino CPU int8 N=") == 3


def test_bench_from_results_without_a_goal_prints_the_front(results, tmp_path, capsys):
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps({"results": results}))
    assert main(["bench", "--from", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "Recommended" not in out and "Pareto front" in out
    assert out.count("`--bundle ") == 5


def test_bench_refuses_two_goals_and_bad_files(results, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--from", "x.json", "--budget", "2", "--min-psnr", "30"])
    missing = tmp_path / "missing.json"
    assert main(["bench", "--from", str(missing), "--budget", "2"]) == 2
    assert "not a results.json" in capsys.readouterr().err
    assert main(["bench", "--from", str(missing), "--budget", "-1"]) == 2
    assert "must be positive" in capsys.readouterr().err
