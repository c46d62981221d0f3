"""How far each golden comparison moves with the CPU's instruction set: the numbers behind the
tests' tolerances.

PyTorch, ONNX Runtime and OpenVINO pick their kernels by CPU (AVX2, AVX-512, AMX), and the
kernels add in different orders, so the same fp32 graph gives results a few ulps apart on
different machines. This measures every comparison the tests make against the goldens (the
torch models, both runtime backends' graphs, the mel spectrogram, the resampler, the
sketches, the face mesh) in a fresh process per environment:

* ``native``: this machine as it is;
* ``capped``: PyTorch's kernels capped at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``,
  ``MKL_ENABLE_INSTRUCTIONS=AVX2``, ``ATEN_CPU_CAPABILITY=avx2``); ONNX Runtime and OpenVINO
  have no such switch;
* ``qemu-CPU``: the whole process under QEMU's user-mode emulator with another CPU model
  (``qemu-x86_64 -cpu EPYC-Milan``: a Zen 3 with AVX2 and no AVX-512; ``Haswell``; others by
  ``--cpu``), so that every library sees that CPU's CPUID and runs that CPU's kernels (Debian's
  ``qemu-user`` package; slow, but the goldens are small).

::

    python -m iplap.benchmarks.isa_spread --bundle BUNDLE --checkpoints DIR --goldens tests/data --out DIR

writes ``isa_spread.json`` and ``isa_spread.md``: the max error of each comparison in each
environment, and the largest of them all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

#: PyTorch's ISA caps (oneDNN, MKL, ATen's own dispatch).
CAPPED_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
#: QEMU CPU models measured by default: Zen 3 (AVX2, the issue's machine) and Haswell (AVX2).
QEMU_CPUS = ("EPYC-Milan", "Haswell")


def _golden(goldens: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(goldens / f"golden_{name}.npz") as f:
        return {k: f[k] for k in f.files}


def _max(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def _torch_errors(goldens: Path, checkpoints: Path) -> dict[str, float]:
    try:
        import torch
    except ImportError:
        return {}
    from ..export.reference import original_landmark_generator, original_renderer

    g = _golden(goldens, "landmark_generator")
    generator = original_landmark_generator(checkpoints)
    with torch.no_grad():
        content = generator(*(torch.from_numpy(g[k]) for k in ("T_mels", "T_pose", "Nl_pose", "Nl_content")))
    errors = {"torch predict_content": _max(content.numpy(), g["predict_content"])}
    g = _golden(goldens, "renderer")
    renderer = original_renderer(checkpoints / "renderer_checkpoint.pth")
    inputs = [torch.from_numpy(g[k]) for k in
              ("face_frame_img", "target_sketches", "ref_N_frame_img", "ref_N_frame_sketch", "audio_mels")]
    with torch.no_grad():
        outputs = renderer(*inputs)
    for name, value in zip(("generated_face", "wrapped_h1", "wrapped_h2", "wrapped_ref"), outputs):
        errors[f"torch {name}"] = _max(value.numpy(), g[name])
    return errors


def _runtime_errors(goldens: Path, bundle_dir: Path) -> dict[str, float]:
    from ..runtime.backends import BackendConfig
    from ..runtime.bundle import Bundle
    from ..runtime.landmark_generator import LandmarkGenerator
    from ..runtime.renderer import Renderer

    bundle, errors = Bundle.load(bundle_dir), {}
    lg, rg = _golden(goldens, "landmark_generator"), _golden(goldens, "renderer")
    for backend in ("onnxruntime", "openvino"):
        config = BackendConfig(backend=backend, threads=2)
        content = LandmarkGenerator(bundle, config).predict(lg["T_mels"], lg["T_pose"], lg["Nl_pose"],
                                                            lg["Nl_content"])
        errors[f"{backend} predict_content"] = _max(content, lg["predict_content"])
        renderer = Renderer(bundle, config)
        refs = renderer.encode_references(rg["ref_N_frame_img"][0], rg["ref_N_frame_sketch"][0])
        out = renderer.render(refs, rg["face_frame_img"][0, 0], rg["target_sketches"][0], rg["audio_mels"][0, 0, 0])
        for name, value in (("generated_face", out.face[None]), ("wrapped_h1", out.wrapped_h1),
                            ("wrapped_h2", out.wrapped_h2), ("wrapped_ref", out.wrapped_ref)):
            errors[f"{backend} {name}"] = _max(value, rg[name])
    return errors


def _signal_errors(goldens: Path) -> dict[str, float]:
    from ..runtime.audio import load_audio, melspectrogram
    from ..runtime.sketch import draw_sketches

    g = _golden(goldens, "mel")
    errors = {"mel": _max(melspectrogram(g["pcm"].astype(np.float32) / 32768.0), g["mel"])}
    g = _golden(goldens, "mel_resampled")
    wav = load_audio(goldens / "speech_44k_stereo.wav")
    errors["resampled wave"] = _max(wav, g["wav_speech_44k_stereo"])
    errors["resampled mel"] = _max(melspectrogram(wav), g["mel_speech_44k_stereo"])
    g = _golden(goldens, "sketch")
    sketches = draw_sketches(g["landmarks"], g["crop_hw"])
    diff = np.abs(sketches.transpose(0, 2, 3, 1) - g["sketch"] / 255.0)
    errors["sketch"] = float(diff.max())
    errors["sketch pixels off"] = float((diff > 0.5 / 255).sum())
    return errors


def _face_errors(goldens: Path, bundle_dir: Path) -> dict[str, float]:
    from ..runtime.backends import BackendConfig
    from ..runtime.face import FaceTracker
    from ..runtime.landmarks import USED_INDICES

    g = _golden(goldens, "facemesh")
    names = [k[len("image__"):] for k in g if k.startswith("image__") and k != "image__no_face"]
    errors = {}
    for backend in ("onnxruntime", "openvino"):
        tracker = FaceTracker.from_folder(bundle_dir / "face", BackendConfig(backend, threads=1))
        worst = 0.0
        for name in names:
            image = g[f"image__{name}"]
            found = tracker.process(image)
            if found is None:
                worst = float("inf")
                continue
            height, width = image.shape[:2]
            reference = g[f"landmarks__{name}__refine"]
            px = np.hypot((found.points[:, 0] - reference[:, 0]) * width, (found.points[:, 1] - reference[:, 1]) * height)
            worst = max(worst, float(px[list(USED_INDICES)].max()))
        errors[f"{backend} face mesh (px)"] = worst
    return errors


def probe(bundle_dir: Path, checkpoints: Path, goldens: Path) -> dict[str, float]:
    """Every golden comparison's max error in this process, as it runs here."""
    return {**_torch_errors(goldens, checkpoints), **_runtime_errors(goldens, bundle_dir), **_signal_errors(goldens),
            **_face_errors(goldens, bundle_dir)}


def _run_probe(args, env: dict[str, str], prefix: list[str], timeout: float) -> dict:
    command = [*prefix, sys.executable, "-m", "iplap.benchmarks.isa_spread", "probe", "--bundle", str(args.bundle),
               "--checkpoints", str(args.checkpoints), "--goldens", str(args.goldens)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, timeout=timeout)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _markdown(results: dict[str, dict]) -> str:
    names = sorted({k for r in results.values() for k in r if k != "error"})
    envs = list(results)
    lines = ["| comparison | " + " | ".join(envs) + " | largest |", "|---|" + "---|" * (len(envs) + 1)]
    for name in names:
        values = [results[e].get(name) for e in envs]
        cells = ["-" if v is None else f"{v:.2e}" for v in values]
        largest = max((v for v in values if v is not None), default=None)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'-' if largest is None else f'{largest:.2e}'} |")
    failed = [f"{e}: {r['error']}" for e, r in results.items() if "error" in r]
    return "\n".join(lines + ([""] + [f"failed: {f}" for f in failed] if failed else [])) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iplap.benchmarks.isa_spread", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", choices=("probe",), help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, required=True, help="an fp32 bundle exported from --checkpoints")
    parser.add_argument("--checkpoints", type=Path, required=True, help="the stand-in checkpoints (seed 0)")
    parser.add_argument("--goldens", type=Path, default=Path("tests/data"), help="the golden .npz files")
    parser.add_argument("--out", type=Path, help="folder for isa_spread.json and isa_spread.md")
    parser.add_argument("--cpu", action="append", help=f"QEMU CPU models (default {', '.join(QEMU_CPUS)})")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per environment")
    args = parser.parse_args(argv)
    if args.mode == "probe":
        print(json.dumps(probe(args.bundle, args.checkpoints, args.goldens)))
        return 0
    environments = {"native": ({}, []), "capped": (CAPPED_ENV, [])}
    qemu = shutil.which("qemu-x86_64")
    for cpu in (args.cpu or QEMU_CPUS) if qemu else ():
        environments[f"qemu-{cpu}"] = ({}, [qemu, "-cpu", cpu])
    results = {}
    for name, (env, prefix) in environments.items():
        print(f"measuring {name}...", file=sys.stderr, flush=True)
        results[name] = _run_probe(args, env, prefix, args.timeout)
    table = _markdown(results)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        from ..provenance import machine_info

        (args.out / "isa_spread.json").write_text(json.dumps({"machine": machine_info(), "results": results},
                                                             indent=2))
        (args.out / "isa_spread.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
