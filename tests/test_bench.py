"""iplap bench --quick writes its outputs: both accuracy columns, the ceiling, the graphs'
share of it, the recommendation. No speed targets: the machine is shared and noisy."""

from __future__ import annotations

import json

import pytest

from iplap.benchmarks.recommend import PSNR_RESOLUTION_DB
from iplap.cli import main

pytest.importorskip("matplotlib")


def _reject(constant):
    raise ValueError(f"results.json holds {constant}, which is not JSON")


def test_rounds_pool_into_medians_and_fastest_frames():
    from iplap.benchmarks.bench import Case, pool_rounds

    case = Case("b", "fp32", "onnxruntime", "CPU", 5, 2)
    stage = lambda t: {"flow_head": t}  # noqa: E731
    rounds = [{"walls": [1.0, 4.0], "stages": [stage(0.5), stage(3.0)], "first_frame_seconds": 2.0,
               "prepare_seconds": 1.0, "peak_rss_mb": 900.0, "distinct_refs": 5},
              {"walls": [2.0, 3.0], "stages": [stage(1.0), stage(2.0)], "first_frame_seconds": 4.0,
               "prepare_seconds": 3.0, "peak_rss_mb": 950.0, "distinct_refs": 5}]
    r = pool_rounds(case, rounds, "x.npz")
    assert (r.seconds_per_frame, r.seconds_min, r.seconds_max) == (2.5, 1.0, 4.0)
    assert r.stages["flow_head"] == 1.5 and r.stages_min["flow_head"] == 0.5
    assert (r.first_frame_seconds, r.prepare_seconds, r.peak_rss_mb, r.error) == (3.0, 2.0, 950.0, None)
    failed = pool_rounds(case, [rounds[0], {"error": "OpenVINO cannot compile"}], "x.npz")
    assert failed.error == "OpenVINO cannot compile" and failed.seconds_per_frame != failed.seconds_per_frame


@pytest.mark.slow  # 20-60 s on 2 cores: keeps the default run under 15 minutes
def test_quick_bench_writes_table_json_and_plots(bundle_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", "--bundle", str(bundle_dir), "--out", str(out), "--quick", "--threads", "2", "--quiet",
                 "--budget", "1000"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((out / "results.json").read_text(), parse_constant=_reject)  # strict JSON
    assert report["machine"]["cores"] >= 1 and "instruction_sets" in report["machine"]
    assert report["machine"]["packages"]["onnxruntime"]
    results = report["results"]
    assert {r["case"]["backend"] for r in results} == {"onnxruntime", "openvino"}
    for r in results:
        assert r["error"] is None, r["error"]
        assert r["seconds_per_frame"] > 0 and r["peak_rss_mb"] > 100
        assert set(r["stages"]) >= {"landmarks", "flow_modulations", "flow_head", "translation", "warp", "blend",
                                    "encode"}
        # fp32 on either backend is the exact path: identical on onnxruntime (psnr null), rounding on OpenVINO.
        assert r["identical"] or r["psnr"] > 45
        # Against the original configuration (N=25): N=5 renders other references, so it differs.
        assert not r["identical_to_original"] and 0 < r["psnr_vs_original"] < (r["psnr"] or float("inf"))
        assert 0 < r["ssim_vs_original"] <= 1 and r["distinct_refs"] == 5
        # OpenVINO runs the two flow graphs as one model (the fused flow): its rate is theirs together.
        fused = r["case"]["backend"] == "openvino"
        ran = ("flow", "translation") if fused else ("flow_modulations", "flow_head", "translation")
        for graph in ran:
            g = r["graphs"][graph]
            assert g["gmac"] > 1 and g["gmac_per_s"] > 0 and 0 < g["share_of_ceiling"] < 10
        assert r["graphs"]["flow_head"]["gmac"] == pytest.approx(5 * report["graph_gmac"]["flow_head"])
        if fused:
            assert r["graphs"]["flow"]["gmac"] == pytest.approx(r["graphs"]["flow_modulations"]["gmac"]
                                                                + r["graphs"]["flow_head"]["gmac"])
            assert r["graphs"]["flow_head"]["gmac_per_s"] is None  # not run apart
    assert report["original"]["label"] == "onnxruntime fp32 N=25 t=2" and report["original"]["measured_apart"]
    ceiling = report["ceiling"]["results"]
    assert {(c["backend"], c["precision"], c["threads"]) for c in ceiling} == {
        (b, p, 2) for b in ("onnxruntime", "openvino") for p in ("fp32", "int8")}
    assert all(c["gmac_per_s"] > 0 for c in ceiling)
    assert report["thread_scaling"] == []  # one thread count
    # A budget no configuration misses: the most accurate against the original configuration.
    recommendation = report["recommendation"]
    # PSNRs are compared at the tables' 0.1 dB, and the faster setting wins a tie (onnxruntime and OpenVINO fp32
    # at the same N differ by float rounding only), so the choice is the fastest of the most accurate.
    def accuracy(r):
        return round(r["psnr_vs_original"] / PSNR_RESOLUTION_DB)

    best = min((r for r in results if accuracy(r) == max(map(accuracy, results))), key=lambda r: r["seconds_per_frame"])
    assert recommendation["choice"]["label"] == best["label"]
    assert recommendation["front"][-1]["label"] == best["label"]
    assert "iplap run --bundle" in captured.out and best["label"] in captured.out
    assert report["command"].startswith("iplap bench --bundle") and "--budget 1000" in report["command"]
    baseline = report["torch_baseline"]
    assert isinstance(baseline, dict) and baseline["5"]["seconds_per_frame"] > 0
    assert all(r["speedup_vs_torch"] > 0 for r in results)
    table = (out / "results.md").read_text()
    assert "| configuration |" in table and "onnxruntime" in table
    assert "PSNR dB vs original" in table and "## The machine's ceiling" in table and "## Recommendation" in table
    assert report["command"] in table
    for name in ("accuracy_vs_time.png", "stages.png", "time_vs_refs.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_without_bundles_or_with_a_bad_backend(tmp_path, bundle_dir, capsys):
    code = main(["bench", "--bundle", str(bundle_dir), "--out", str(tmp_path), "--backends", "cuda", "--quick"])
    assert code == 2 and "unknown backend" in capsys.readouterr().err


def _row(backend, threads, frame, flow_head, distinct=5):
    return {"case": {"bundle": "b", "precision": "int8", "backend": backend, "device": "CPU", "refs": 5,
                     "threads": threads, "name": ""},
            "error": None, "seconds_per_frame": frame + 1, "seconds_min": frame, "distinct_refs": distinct,
            "stages": {"flow_modulations": 9.0, "flow_head": 9.0, "translation": 9.0, "warp": 9.0},  # medians
            "stages_min": {"flow_modulations": 0.1, "flow_head": flow_head, "translation": 0.2, "warp": 0.01}}


def test_thread_scaling_is_speedup_and_efficiency_per_graph_of_the_fastest_frames():
    from iplap.benchmarks.bench import thread_scaling

    rows = thread_scaling([_row("onnxruntime", 1, 3.0, 2.0), _row("onnxruntime", 2, 2.0, 1.25),
                           _row("openvino", 2, 1.0, 0.5)])  # one thread count only: no row
    assert len(rows) == 1 and rows[0]["setting"] == "onnxruntime int8 N=5" and rows[0]["threads"] == [1, 2]
    assert rows[0]["frame"] == pytest.approx({"speedup": 1.5, "efficiency": 0.75})
    assert rows[0]["flow_head"] == pytest.approx({"speedup": 1.6, "efficiency": 0.8})
    assert rows[0]["flow_modulations"] == pytest.approx({"speedup": 1.0, "efficiency": 0.5})


def test_graph_share_of_the_ceiling_counts_flow_head_per_reference():
    from iplap.benchmarks.bench import Case, CaseResult, graph_throughput

    row = _row("onnxruntime", 2, 2.0, 1.25, distinct=4)
    result = CaseResult(Case(**row["case"]), 2.0, 2.0, 2.0, row["stages"], 2.0, 1.0, 900.0,
                        stages_min=row["stages_min"], distinct_refs=4)
    ceiling = {"results": [{"backend": "onnxruntime", "precision": "int8", "threads": 2, "gmac_per_s": 100.0},
                           {"backend": "onnxruntime", "precision": "int8", "threads": 1, "gmac_per_s": 60.0},
                           {"backend": "onnxruntime", "precision": "int8", "threads": 2, "gmac_per_s": 160.0,
                            "block": "spade"}]}
    graphs = graph_throughput(result, {"flow_modulations": 5.0, "flow_head": 25.0, "translation": 10.0}, ceiling)
    assert graphs["flow_head"]["gmac"] == 100.0  # 4 distinct references
    assert graphs["flow_head"]["gmac_per_s"] == pytest.approx(80.0)
    assert graphs["flow_head"]["share_of_ceiling"] == pytest.approx(0.8)
    assert graphs["flow_head"]["share_of_block_ceiling"] == pytest.approx(0.5)  # of the SPADE block's stack
    assert graphs["translation"]["share_of_ceiling"] == pytest.approx(0.5)
    assert graphs["flow"]["seconds"] is None  # this row ran the two flow graphs apart
    fused = dict(row["stages_min"], flow=row["stages_min"]["flow_modulations"] + row["stages_min"]["flow_head"])
    del fused["flow_modulations"], fused["flow_head"]
    result = CaseResult(Case(**row["case"]), 2.0, 2.0, 2.0, fused, 2.0, 1.0, 900.0, stages_min=fused, distinct_refs=4)
    flow = graph_throughput(result, {"flow_modulations": 5.0, "flow_head": 25.0, "translation": 10.0}, ceiling)["flow"]
    assert flow["gmac"] == 5.0 + 100.0 and flow["seconds"] == pytest.approx(fused["flow"])  # OpenVINO's fused flow


def test_the_ceiling_is_the_faster_of_its_measurements():
    from iplap.benchmarks.bench import merge_ceilings

    def entry(precision, rate, sustained):
        return {"backend": "openvino", "precision": precision, "threads": 2, "gmac_per_s": rate,
                "sustained_gmac_per_s": sustained}

    before = {"when": "before", "config": {"layers": 8},
              "results": [entry("fp32", 50.0, 40.0), entry("int8", 400.0, 150.0)]}
    after = {"when": "after", "config": {"layers": 8},
             "results": [entry("fp32", 90.0, 30.0), entry("int8", 300.0, 200.0)]}
    merged = merge_ceilings([before, after])
    # burst and sustained each from its own best measurement
    assert {(e["precision"], e["gmac_per_s"], e["when"], e["sustained_gmac_per_s"], e["sustained_when"])
            for e in merged["results"]} == {("fp32", 90.0, "after", 40.0, "before"),
                                            ("int8", 400.0, "before", 200.0, "after")}
    assert merge_ceilings([{"when": "before", "error": "no nncf"}, after])["results"][0]["when"] == "after"
    spade = {"when": "after", "config": {"layers": 8}, "results": [{**entry("int8", 100.0, 90.0), "block": "spade"}]}
    stacks = merge_ceilings([before, spade])["results"]  # the two stacks are kept apart
    assert sorted((e.get("block", "conv"), e["gmac_per_s"]) for e in stacks if e["precision"] == "int8") == [
        ("conv", 400.0), ("spade", 100.0)]
    assert "error" in merge_ceilings([{"when": "before", "error": "no nncf"}])


def test_operator_profile_names_each_backends_operators(bundle_dir):
    from iplap.benchmarks.profile_graph import profile

    out = profile([bundle_dir], "flow_modulations", ["onnxruntime", "openvino"], batch=1, threads=1, runs=1)
    assert set(out) == {f"onnxruntime {bundle_dir.name}", f"openvino {bundle_dir.name}"}
    ort, ov = out[f"onnxruntime {bundle_dir.name}"], out[f"openvino {bundle_dir.name}"]
    assert ort["seconds"] > 0 and ort["operators"]["Conv"] > 0
    assert any(op.startswith("Convolution (") for op in ov["operators"]) and sum(ov["operators"].values()) > 0


def test_accuracy_panel_without_any_measured_accuracy():
    """A bench of the reference configuration alone (one backend, fp32) has no PSNR to plot:
    the panel still gets its limits (it raised TypeError from min(30.0, *[]))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from iplap.benchmarks.grid import Skipped
    from iplap.benchmarks.plots import _accuracy_axes

    fig, ax = plt.subplots()
    _accuracy_axes(ax, {"torch_baseline": Skipped("no torch")}, [], "vs the reference")
    assert ax.get_ylim()[0] == 30.0
    plt.close(fig)
