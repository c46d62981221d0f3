"""Renderer speed: the original torch renderer against the split runtime renderer, fp32.

In one run, on the same inputs, machine and thread count:

* ``torch original``: the original forward pass, which reruns the whole flow network for
  every reference on every frame (needs torch);
* ``split`` on onnxruntime and on OpenVINO (CPU, f32): per-frame graphs plus the Numba
  warp kernel. The per-video part (reference features) is timed apart.

Usage::

    python -m iplap.benchmarks.bench_renderer [--bundle B] [--checkpoint-dir D] [--refs 25]
        [--threads 2] [--repeats 3] [--json out.json]

Without ``--checkpoint-dir`` the stand-in checkpoints are written to a temporary folder;
without ``--bundle`` one is exported there (about a minute).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..runtime.constants import BACKENDS, DEFAULT_REFS


def realistic_inputs(n_refs: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Renderer inputs made from the sample photo: face crops, sketches, a mel window."""
    import cv2

    from ..runtime.audio import load_audio, melspectrogram
    from ..samples import FACE_IMAGE, SPEECH_16K

    rng = np.random.default_rng(seed)
    photo = cv2.imread(str(FACE_IMAGE))
    crop = photo[60:260, 130:330]  # roughly the face

    def jitter(image):
        m = cv2.getRotationMatrix2D((64, 64), float(rng.uniform(-5, 5)), float(rng.uniform(0.95, 1.05)))
        m[:, 2] += rng.uniform(-3, 3, 2)
        return cv2.warpAffine(cv2.resize(image, (128, 128)), m, (128, 128), borderMode=cv2.BORDER_REFLECT)

    images = np.stack([jitter(crop) for _ in range(n_refs)]).astype(np.float32).transpose(0, 3, 1, 2) / 255
    edges = [cv2.Canny(cv2.cvtColor((img.transpose(1, 2, 0) * 255).astype(np.uint8), cv2.COLOR_BGR2GRAY), 80, 160)
             for img in images]
    sketches = np.stack([np.repeat(e[None] > 0, 3, 0) * (224 / 255) for e in edges]).astype(np.float32)
    mel = melspectrogram(load_audio(SPEECH_16K))
    return {"ref_images": images, "ref_sketches": sketches, "face": images[0], "target_sketches": sketches[:5],
            "mel": mel[:, 40:56]}


def _median(values):
    return statistics.median(values) if values else float("nan")


def time_torch_original(checkpoint: Path, inputs: dict, threads: int, repeats: int) -> dict:
    import torch

    from ..export.reference import original_renderer

    torch.set_num_threads(threads)
    renderer = original_renderer(checkpoint)
    args = (torch.from_numpy(inputs["face"])[None, None], torch.from_numpy(inputs["target_sketches"])[None],
            torch.from_numpy(inputs["ref_images"])[None], torch.from_numpy(inputs["ref_sketches"])[None],
            torch.from_numpy(inputs["mel"])[None, None, None])
    times = []
    with torch.no_grad():
        renderer(*args)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            face = renderer(*args)[0]
            times.append(time.perf_counter() - start)
    return {"per_frame_s": _median(times), "runs_s": times, "face": face[0].numpy()}


def time_split(bundle_dir: Path, backend: str, inputs: dict, threads: int, repeats: int) -> dict:
    from ..runtime.backends import BackendConfig
    from ..runtime.bundle import Bundle
    from ..runtime.renderer import Renderer

    renderer = Renderer(Bundle.load(bundle_dir), BackendConfig(backend=backend, threads=threads))
    start = time.perf_counter()
    refs = renderer.encode_references(inputs["ref_images"], inputs["ref_sketches"])
    per_video = time.perf_counter() - start
    renderer.render(refs, inputs["face"], inputs["target_sketches"], inputs["mel"])  # warm-up
    times, stages = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        result = renderer.render(refs, inputs["face"], inputs["target_sketches"], inputs["mel"])
        times.append(time.perf_counter() - start)
        stages.append(result.seconds)
    stage_median = {k: _median([s[k] for s in stages]) for k in stages[0]}
    return {"per_frame_s": _median(times), "runs_s": times, "per_video_s": per_video, "stages_s": stage_median,
            "face": result.face}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--checkpoint-dir", type=Path)
    parser.add_argument("--refs", type=int, default=DEFAULT_REFS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="iplap-bench-") as tmp:
        checkpoint_dir = args.checkpoint_dir
        if checkpoint_dir is None:
            from ..export.reference import standin_checkpoints

            checkpoint_dir = Path(tmp) / "checkpoints"
            standin_checkpoints(checkpoint_dir)
        bundle = args.bundle
        if bundle is None:
            from ..export.bundle_writer import ExportConfig, export_bundle

            print("exporting a bundle (about a minute)...", file=sys.stderr)
            bundle = export_bundle(ExportConfig.from_dir(checkpoint_dir, Path(tmp) / "bundle", face_models=False)).root
        inputs = realistic_inputs(args.refs)
        results = {}
        if not args.skip_torch:
            print("timing the torch original...", file=sys.stderr)
            results["torch original"] = time_torch_original(checkpoint_dir / "renderer_checkpoint.pth", inputs,
                                                            args.threads, args.repeats)
        for backend in BACKENDS:
            print(f"timing split on {backend}...", file=sys.stderr)
            results[f"split {backend}"] = time_split(bundle, backend, inputs, args.threads, args.repeats)

    baseline = results.get("torch original", {}).get("per_frame_s")
    reference_face = results.get("torch original", {}).get("face")
    print(f"\nRenderer, fp32, N={args.refs}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"median of {args.repeats}\n")
    print("| renderer | s/frame | speed-up vs torch | per-video s | max |face - torch| |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        speedup = f"{baseline / r['per_frame_s']:.2f}x" if baseline else "n/a"
        err = f"{np.abs(r['face'] - reference_face).max():.1e}" if reference_face is not None else "n/a"
        print(f"| {name} | {r['per_frame_s']:.3f} | {speedup} | {r.get('per_video_s', float('nan')):.3f} | {err} |")
    for name, r in results.items():
        if "stages_s" in r:
            print(f"\n{name} per stage (s): " + ", ".join(f"{k} {v:.3f}" for k, v in r["stages_s"].items()))
    if args.json:
        clean = {k: {kk: vv for kk, vv in v.items() if kk != "face"} for k, v in results.items()}
        args.json.write_text(json.dumps({"refs": args.refs, "threads": args.threads, "results": clean}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
