"""iplap bench --quick writes its three outputs."""

from __future__ import annotations

import json

import pytest

from iplap.cli import main

pytest.importorskip("matplotlib")


def _reject(constant):
    raise ValueError(f"results.json holds {constant}, which is not JSON")


def test_quick_bench_writes_table_json_and_plots(bundle_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", "--bundle", str(bundle_dir), "--out", str(out), "--quick", "--threads", "2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
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
    baseline = report["torch_baseline"]
    assert isinstance(baseline, dict) and baseline["5"]["seconds_per_frame"] > 0
    assert all(r["speedup_vs_torch"] > 0 for r in results)
    table = (out / "results.md").read_text()
    assert "| configuration |" in table and "onnxruntime" in table
    for name in ("accuracy_vs_time.png", "stages.png", "time_vs_refs.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_without_bundles_or_with_a_bad_backend(tmp_path, bundle_dir, capsys):
    code = main(["bench", "--bundle", str(bundle_dir), "--out", str(tmp_path), "--backends", "cuda", "--quick"])
    assert code == 2 and "unknown backend" in capsys.readouterr().err
