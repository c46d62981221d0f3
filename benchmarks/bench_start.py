"""How fast iplap starts: ``iplap --help``, the one-off kernel compile, and ``iplap run`` from
launch to its first frame, cold (first run after an install: empty Numba and OpenVINO caches)
and warm (the run after), each in a fresh process.

* ``--help``: the wall time of ``python -m iplap --help`` (best of 5), and whether it imported
  Numba, numpy or an inference engine (it should not);
* kernels: each Numba kernel's first call in a process with an empty cache (its compile) and
  in the next (loaded from the cache);
* ``iplap run``: the sample photo (and a prepared avatar of it) speaking ``--speech-seconds``
  of the sample speech, per backend; launch to the first frame written = the process's wall
  time less the render's time after its first frame (``--json``'s ``seconds`` less
  ``first_frame_seconds``).

::

    python -m iplap.benchmarks.bench_start --bundle BUNDLE --out DIR

writes ``start.json`` and ``start.md``. The OS's file cache is not dropped: "cold" means
iplap's own caches are empty, not the disk's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..limits import BACKENDS
from ..provenance import cpu_info, machine_info

_HELP = """
import sys
from iplap.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
heavy = [m for m in ("numba", "numpy", "onnxruntime", "openvino", "cv2", "av") if m in sys.modules]
print("IMPORTED", ",".join(heavy), file=sys.stderr)
"""

_KERNELS = """
import json, time
import numpy as np
t = {}
start = time.perf_counter()
from iplap.runtime import jit, warp, resample
from iplap.runtime.face import geometry
t["import"] = time.perf_counter() - start
for name, call in (("warp_fuse", warp.warm_up),
                   ("resampler", lambda: resample.KaiserResampler(44100, 16000).push(np.zeros(4410, np.float32))),
                   ("face geometry", lambda: geometry.fixed_point_maps(np.eye(3), 8, 8))):
    start = time.perf_counter()
    call()
    t[name] = time.perf_counter() - start
print("KERNELS", json.dumps(t))
"""


def _env(caches: Path) -> dict[str, str]:
    """This process's environment with iplap's caches (Numba's and OpenVINO's) in ``caches``."""
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = str(caches / "numba")
    env["IPLAP_CACHE"] = str(caches / "iplap")
    return env


def _marked(stream: str, mark: str) -> str:
    return next(line[len(mark) + 1:] for line in stream.splitlines() if line.startswith(mark + " "))


def help_time(repeats: int = 5) -> dict:
    best, imported = float("inf"), ""
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _HELP], capture_output=True, text=True, check=True)
        best = min(best, time.perf_counter() - start)
        imported = _marked(done.stderr, "IMPORTED")
    return {"seconds": round(best, 3), "imported": imported.split(",") if imported else []}


def kernel_times(caches: Path) -> dict:
    """Each kernel's first call with an empty cache, then in the next process (from the cache)."""
    out = {}
    for when in ("cold", "warm"):
        done = subprocess.run([sys.executable, "-c", _KERNELS], capture_output=True, text=True, check=True,
                              env=_env(caches))
        out[when] = {k: round(v, 3) for k, v in json.loads(_marked(done.stdout, "KERNELS")).items()}
    return out


def run_time(args: list[str], caches: Path) -> dict:
    """``iplap run ARGS --json`` in a fresh process: launch to first frame, and the whole run."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "iplap", "run", *args, "--json", "-q"], capture_output=True,
                          text=True, env=_env(caches), check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"iplap run failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    after_first = report["seconds"] - report["first_frame_seconds"]
    return {"to_first_frame_s": round(wall - after_first, 2), "wall_s": round(wall, 2),
            "load_s": report["load_seconds"], "frames": report["frames"]}


def _speech(folder: Path, seconds: float) -> Path:
    import soundfile

    from ..runtime.audio import load_audio
    from ..samples import SPEECH_16K

    path = folder / "speech.wav"
    soundfile.write(path, load_audio(SPEECH_16K)[: int(seconds * 16000)], 16000)
    return path


def measure(bundle: Path, backends: tuple[str, ...], speech_seconds: float, threads: int) -> dict:
    from ..samples import FACE_IMAGE

    results: dict = {"help": help_time()}
    with tempfile.TemporaryDirectory(prefix="iplap-start-") as tmp:
        tmp = Path(tmp)
        results["kernels"] = kernel_times(tmp / "kernels")
        speech = _speech(tmp, speech_seconds)
        common = ["--bundle", str(bundle), "--audio", str(speech), "--out", str(tmp / "out.mp4"),
                  "--threads", str(threads)]
        runs = []
        for backend in backends:
            caches = tmp / f"caches-{backend}"
            for when in ("cold", "warm"):
                record = run_time([*common, "--face", str(FACE_IMAGE), "--backend", backend], caches)
                runs.append({"backend": backend, "face": "photo", "start": when, **record})
                print(f"  {backend} photo {when}: {record['to_first_frame_s']} s to the first frame", file=sys.stderr)
            avatar = tmp / f"photo-{backend}.avatar"
            subprocess.run([sys.executable, "-m", "iplap", "prepare", "--bundle", str(bundle), "--face",
                            str(FACE_IMAGE), "--out", str(avatar), "--backend", backend, "-q"], check=True,
                           env=_env(caches), capture_output=True)
            record = run_time([*common, "--avatar", str(avatar), "--backend", backend], caches)
            runs.append({"backend": backend, "face": "prepared avatar (photo)", "start": "warm", **record})
        results["runs"] = runs
    return results


def markdown(results: dict, command: str) -> str:
    help_ = results["help"]
    lines = [f"# Start times\n\n`{command}`\n\nMachine: {cpu_info()['cpu']}.\n",
             f"`iplap --help`: {help_['seconds']:.2f} s (best of 5); heavy modules imported: "
             f"{', '.join(help_['imported']) or 'none'}.\n",
             "| kernel | first compile s (empty cache) | next process s (from the cache) |", "|---|---|---|"]
    cold, warm = results["kernels"]["cold"], results["kernels"]["warm"]
    lines += [f"| {name} | {cold[name]:.2f} | {warm[name]:.2f} |" for name in cold]
    lines += ["", "| iplap run | backend | caches | launch to first frame s | load s | whole run s | frames |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['face']} | {r['backend']} | {r['start']} | {r['to_first_frame_s']:.1f} | {r['load_s']:.1f} | "
              f"{r['wall_s']:.1f} | {r['frames']} |" for r in results["runs"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iplap.benchmarks.bench_start", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--speech-seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    results = measure(args.bundle, tuple(args.backends.split(",")), args.speech_seconds, args.threads)
    command = "python -m iplap.benchmarks.bench_start " + " ".join(argv if argv is not None else sys.argv[1:])
    table = markdown(results, command)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "start.json").write_text(json.dumps({"machine": machine_info(), **results}, indent=2))
        (args.out / "start.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
