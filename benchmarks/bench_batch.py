"""Batch throughput locally and on a one-node Ray cluster, measured in one run.

The same five jobs (two faces, five speech segments from the sample speech) run with
``iplap batch`` on local worker processes and then as Ray tasks on a Ray cluster started
here on loopback, with the same workers x threads. Reported: frames per second over the
batch (all rendered frames / wall time of the command), and Ray's overhead per job: the
difference of the wall times divided by the number of jobs (the renders themselves are the
same work). Run twice each, alternating, to see the noise.

    python -m iplap.benchmarks.bench_batch --bundle bundle/ --refs 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from iplap.batch.ray_cluster import auth_env, start_loopback_cluster, stop_loopback_cluster

SEGMENTS = [(0.5, 1.3), (1.3, 2.1), (2.1, 2.9), (2.9, 3.7), (3.7, 4.4)]


def make_inputs(folder: Path) -> Path:
    import cv2
    import soundfile

    import iplap
    from iplap.samples import FACE_IMAGE, SPEECH_16K
    from iplap.samples.clip import head_motion_frames, write_clip

    write_clip(folder / "clip.mp4", head_motion_frames(1.0, size=512))
    cv2.imwrite(str(folder / "photo.png"), cv2.imread(str(FACE_IMAGE)))
    wav = iplap.load_speech(SPEECH_16K).samples[:, 0]
    rows = []
    for k, (a, b) in enumerate(SEGMENTS):
        soundfile.write(folder / f"s{k}.wav", wav[int(a * 16000):int(b * 16000)], 16000)
        rows.append(f"{'clip.mp4' if k < 3 else 'photo.png'},s{k}.wav")
    (folder / "jobs.csv").write_text("face,audio\n" + "\n".join(rows) + "\n")
    return folder / "jobs.csv"


def run_batch(manifest: Path, bundle: Path, out_dir: Path, extra: list[str], env: dict[str, str] | None = None) -> dict:
    shutil.rmtree(out_dir, ignore_errors=True)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "iplap", "batch", str(manifest), "--bundle", str(bundle), "--out",
                             str(out_dir), "--quiet", *extra], capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"iplap batch failed ({result.returncode}):\n{result.stderr[:3000]}")
    frames = int(re.search(r"frames rendered\s+(\d+)", result.stderr).group(1))
    return {"wall_s": wall, "frames": frames, "fps": frames / wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--refs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="local workers, and concurrent Ray tasks (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker or task (default 1)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results: dict = {"local": [], "ray": [], "jobs": len(SEGMENTS), "cpu_count": os.cpu_count(), "refs": args.refs}
    common = ["--refs", str(args.refs), "--threads", str(args.threads)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = make_inputs(tmp)
        # A fresh token: the cluster's ports listen on every interface while it runs.
        token = secrets.token_hex(32)
        address = start_loopback_cluster(tmp / "ray-cluster", num_cpus=args.workers * args.threads,
                                         object_store_bytes=800_000_000, token=token)
        try:
            for _ in range(args.rounds):
                results["local"].append(run_batch(manifest, args.bundle, tmp / "local",
                                                  ["--workers", str(args.workers), *common]))
                results["ray"].append(run_batch(manifest, args.bundle, tmp / "ray",
                                                ["--ray", address, *common], env=auth_env(token)))
        finally:
            stop_loopback_cluster()
    best = {k: min(results[k], key=lambda r: r["wall_s"]) for k in ("local", "ray")}
    overhead = (best["ray"]["wall_s"] - best["local"]["wall_s"]) / len(SEGMENTS)
    results["ray_overhead_per_job_s"] = overhead
    print(f"{len(SEGMENTS)} jobs (2 faces), N={args.refs}, {args.workers} workers x {args.threads} threads, "
          f"{os.cpu_count()} cores; best of {args.rounds}:")
    for name in ("local", "ray"):
        runs = ", ".join(f"{r['wall_s']:.1f} s" for r in results[name])
        print(f"  {name:5s} {best[name]['frames']} frames in {best[name]['wall_s']:.1f} s = "
              f"{best[name]['fps']:.2f} frames/s   (runs: {runs})")
    print(f"  Ray's overhead: {overhead:+.2f} s per job (connecting, shipping the bundle, tasks, results)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
