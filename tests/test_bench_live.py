"""``iplap bench --live``: the live benchmark's machinery (a quick run) and its choice."""

from __future__ import annotations

import json
import math

import pytest

from iplap.benchmarks.live_grid import LiveCase
from iplap.benchmarks.live_scoring import frame_gmac, live_choice, pool_live
from iplap.cli import main
from iplap.runtime.constants import FPS


def test_quick_live_bench_measures_both_avatars_against_the_ceiling(bundle_dir, tmp_path, capsys):
    """A quick run on onnxruntime: for a photo and a video avatar, the sustained frame rate,
    latency, the rate the ceiling allows and their ratio, accuracy against the reference
    (itself here), the interruption latency, and a live choice for each."""
    out = tmp_path / "live"
    code = main(["bench", "--live", "--quick", "--quiet", "--bundle", str(bundle_dir), "--out", str(out),
                 "--backends", "onnxruntime", "--threads", "2", "--soak", "2"])
    assert code == 0
    report = json.loads((out / "live.json").read_text())
    results = report["results"]
    assert [r["case"]["avatar"] for r in results] == ["photo", "video"]
    for r in results:
        print(f"\n{r['label']}: {r['fps_best']:.2f} fps, ceiling {r['ceiling_fps']:.2f}, latency {r['latency_s']:.2f} s,"
              f" interrupt {r['interrupt_s'] * 1e3:.0f} ms, on the clock {r['realtime']}")
        assert r["error"] is None
        assert r["fps_best"] > 0 and r["fps_median"] > 0
        assert r["gmac_per_frame"] == pytest.approx(frame_gmac(report["graph_gmac"], r["distinct_refs"]))
        assert r["ceiling_fps"] > 0 and r["share_of_ceiling"] == pytest.approx(r["fps_best"] / r["ceiling_fps"])
        assert 0 < r["ceiling_fps_sustained"] and r["share_of_ceiling_sustained"] == pytest.approx(
            r["fps_best"] / r["ceiling_fps_sustained"])
        # and against the ceiling of the renderer's SPADE block, measured before and after the grid
        assert r["block_ceiling_fps"] > 0 and r["block_share_of_ceiling"] == pytest.approx(
            r["fps_best"] / r["block_ceiling_fps"])
        assert {"landmarks", "sketches", "translation", "warp", "blend"} <= set(r["stage_ms"])
        assert all(v >= 0 for v in r["stage_ms"].values()) and r["stage_ms"]["translation"] > 0
        (one,) = r["rounds"]  # one round, measured against the ceiling right before and after it
        assert one["ceiling_fps"] > 0 and one["share"] == pytest.approx(one["fps"] / one["ceiling_fps"])
        assert r["share_same_phase"] == r["share_same_phase_best"] == one["share"]
        assert one["block_ceiling_fps"] > 0 and r["block_share_same_phase"] == one["block_share"] == pytest.approx(
            one["fps"] / one["block_ceiling_fps"])  # and against the SPADE block's windows
        assert one["ceiling_fps"] <= r["ceiling_fps_sustained"] * (1 + 1e-9)  # the merged one is the best of all
        assert 0 < r["latency_s"] < 60
        assert r["interrupt_s"] is not None and r["interrupt_s"] < 0.2  # the next frame (and a busy machine)
        assert r["reference"] == r["label"] and r["identical_to_reference"]  # fp32 onnxruntime is the reference
        rt = r["realtime"]
        assert rt["k"] >= 1 and rt["real_time_factor"] > 0 and rt["speaking_frames"] > 0
        assert r["case"]["inbetween"] == "warp" and 0 < rt["distinct_per_s"] <= FPS + 1e-9
    assert results[0]["distinct_refs"] == 1  # a photo: one distinct reference, whatever N
    assert set(report["choice"]) == {"photo", "video"}
    whens = [run["when"] for run in report["ceiling"]["runs"]]  # before, around each round, after
    assert whens[0] == "before" and whens[-1] == "after" and sum(w.startswith("between") for w in whens) == 2
    assert [w.split(" (")[0] for w in whens[1:-1]] == ["ahead of", "between"] * 2
    blocks = [{e["block"] for e in run["results"]} for run in report["ceiling"]["runs"]]
    assert all(b == {"conv", "spade"} for b in blocks)  # both stacks, before, around each round and after
    for avatar, soak in report["soak"].items():  # the live choice, run as an agent would for 2 s
        print(f"\nsoak {avatar}: {soak}")
        assert soak["label"] == report["choice"][avatar]["label"] and soak["replies"] >= 1
        assert soak["fps"] == pytest.approx(25, rel=0.2) and soak["peak_rss_mb"] >= soak["rss_start_mb"] > 0
    text = (out / "live.md").read_text()
    assert "| photo onnxruntime fp32 N=1 t=2 warp |" in text and "## Live choice" in text and "## The ceiling" in text
    assert "## Soak" in text and "## Where a render's time goes" in text and "| spade | onnxruntime | fp32 | 2 |" in text
    printed = capsys.readouterr().out
    assert "live, photo:" in printed and "live, video:" in printed


def _result(avatar, fps, psnr=None, identical=False, label=None, backend="openvino", best=None):
    case = LiveCase("b", "int8", backend, "CPU", 2, avatar, 5)
    return {"label": label or f"{avatar} {fps}", "case": case.__dict__, "error": None, "fps_best": best or fps,
            "fps_median": fps, "psnr_vs_reference": psnr, "identical_to_reference": identical}


def test_live_choice_is_the_most_accurate_that_sustains_25_fps_else_the_fastest():
    results = [_result("photo", 30.0, 40.0, label="fast"), _result("photo", 26.0, 45.0, label="accurate"),
               _result("photo", 10.0, identical=True, label="exact"),
               _result("video", 8.0, 40.0, label="quicker"), _result("video", 3.0, identical=True, label="slow"),
               _result("video", 4.0, 40.0, label="lucky round", best=30.0)]  # judged on its median frames
    choice = live_choice(results)
    assert choice["photo"]["label"] == "accurate" and choice["photo"]["sustains"] and choice["photo"]["k"] == 1
    video = choice["video"]
    assert video["label"] == "quicker" and not video["sustains"]
    assert video["k"] == 4 and video["picture_rate"] == pytest.approx(25 / 4)  # ceil(25 / 8)


def test_pooled_rates_are_best_round_against_the_ceiling_and_each_round_against_its_own():
    case = LiveCase("b", "int8", "openvino", "CPU", 2, "video", 5)
    rounds = [{"frame_seconds": [0.2, 0.25, 0.2], "latency_s": 0.5, "interrupt_s": 0.03, "prepare_seconds": 1.0,
               "peak_rss_mb": 900.0, "distinct_refs": 5,
               "realtime": {"pictures_per_s": 4.0, "k": 7, "real_time_factor": 6.1}},
              {"frame_seconds": [0.1, 0.1, 0.12], "latency_s": 0.4, "interrupt_s": 0.02, "prepare_seconds": 1.2,
               "peak_rss_mb": 950.0, "distinct_refs": 5,
               "realtime": {"pictures_per_s": 5.0, "k": 6, "real_time_factor": 5.2}}]
    gmac = {"flow_modulations": 30.0, "flow_head": 10.0, "translation": 50.0}
    ceiling = {"results": [{"backend": "openvino", "precision": "int8", "threads": 2, "gmac_per_s": 1300.0,
                            "sustained_gmac_per_s": 650.0}]}
    # The ceiling measured right before and right after each round: the faster window counts.
    beside = ({"backend": "openvino", "precision": "int8", "threads": 2, "gmac_per_s": 900.0,
               "sustained_gmac_per_s": 260.0}, None)
    rounds[0]["ceiling_beside"] = list(beside)
    rounds[1]["ceiling_beside"] = [{**beside[0], "sustained_gmac_per_s": 520.0},
                                   {**beside[0], "sustained_gmac_per_s": 650.0}]
    rounds[1]["block_beside"] = [{**beside[0], "sustained_gmac_per_s": 325.0}, None]  # the SPADE block's windows
    r = pool_live(case, rounds, gmac, ceiling)
    assert r["gmac_per_frame"] == 30 + 5 * 10 + 50
    assert [x["block_share"] for x in r["rounds"]] == [None, pytest.approx(4.0)]  # 10 fps / (325 / 130)
    assert r["block_share_same_phase"] == r["block_share_same_phase_best"] == pytest.approx(4.0)
    assert [x["ceiling_fps"] for x in r["rounds"]] == pytest.approx([2.0, 5.0])  # 260 / 130, 650 / 130
    assert [x["share"] for x in r["rounds"]] == pytest.approx([2.5, 2.0])  # 5 / 2 fps, 10 / 5 fps
    assert r["share_same_phase"] == pytest.approx(2.25) and r["share_same_phase_best"] == pytest.approx(2.5)
    rounds[0]["ceiling_beside"] = [None, None]  # not measured (failed): no share for that round
    assert pool_live(case, rounds, gmac, ceiling)["share_same_phase"] == pytest.approx(2.0)
    assert r["fps_best"] == pytest.approx(10.0)  # the faster round's median frame
    assert r["ceiling_fps"] == pytest.approx(1300 / 130) and r["share_of_ceiling"] == pytest.approx(1.0)
    assert r["ceiling_fps_sustained"] == pytest.approx(5.0) and r["share_of_ceiling_sustained"] == pytest.approx(2.0)
    assert r["latency_s"] == 0.4 and r["peak_rss_mb"] == 950.0 and r["realtime"]["k"] == 6
    failed = pool_live(case, [{"error": "boom"}], gmac, ceiling)
    assert failed["error"] == "boom" and "fps_best" not in failed
    assert math.isclose(frame_gmac(gmac, 1), 90.0)


def test_live_bench_refuses_offline_goals_and_unknown_hints(bundle_dir, tmp_path, capsys):
    assert main(["bench", "--live", "--bundle", str(bundle_dir), "--out", str(tmp_path), "--budget", "1"]) == 2
    assert main(["bench", "--live", "--bundle", str(bundle_dir), "--out", str(tmp_path), "--ov-precision", "i4"]) == 2
    err = capsys.readouterr().err
    assert "--budget and --min-psnr are for the offline grid" in err and "unknown --ov-precision 'i4'" in err
