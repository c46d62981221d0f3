"""What a minimal deployment weighs on disk: the runtime's install per backend, a bundle per
format and precision, and prepared avatars (and what in them takes the room).

* install: the files of every installed distribution the runtime needs (iplap's own
  dependencies and theirs, as this environment resolved them), for three deployments:
  both backends, onnxruntime only (no ``openvino``: the runtime then runs onnxruntime alone)
  and OpenVINO only (no ``onnxruntime``); the Python interpreter itself not counted;
* bundles: each ``--bundle`` given, by format (ONNX, OpenVINO IR) and for the face models,
  as ``iplap bundle info`` counts them;
* avatars: ``iplap prepare`` of the sample photo and of a ``--video-seconds`` face video made
  from it, at N = 5 and 25, with the size of each member.

::

    python -m iplap.benchmarks.footprint --bundle BUNDLE [--bundle INT8] --out DIR

writes ``footprint.json`` and ``footprint.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from ..provenance import cpu_info, machine_info

MB = 1e6
#: The distributions each one-backend deployment leaves out.
DEPLOYMENTS = {"both backends": (), "onnxruntime only": ("openvino",), "OpenVINO only": ("onnxruntime",)}


def _name(requirement: str) -> str:
    return re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def closure(root: str = "iplap", without: tuple[str, ...] = ()) -> set[str]:
    """The installed distributions ``root`` needs, transitively (extras not followed), with
    ``without`` left out (and what only they need)."""
    seen, todo = set(), [root]
    while todo:
        name = todo.pop()
        if name in seen or name in without:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        todo += [_name(r) for r in dist.requires or [] if "extra ==" not in r]
    return seen - {root}


def dist_bytes(name: str) -> int:
    dist = metadata.distribution(name)
    total = 0
    for file in dist.files or []:
        path = Path(dist.locate_file(file))
        if path.is_file():
            total += path.stat().st_size
    return total


def install_sizes() -> dict:
    sizes = {name: dist_bytes(name) for name in sorted(closure())}
    deployments = {label: round(sum(sizes[n] for n in closure(without=left_out)) / MB, 1)
                   for label, left_out in DEPLOYMENTS.items()}
    return {"packages_mb": {n: round(b / MB, 1) for n, b in sorted(sizes.items(), key=lambda kv: -kv[1])},
            "deployments_mb": deployments}


def bundle_sizes(path: Path) -> dict:
    from ..runtime.bundle import Bundle
    from ..runtime.bundle_info import describe

    info = describe(Bundle.load(path))
    per_format: dict[str, int] = {}
    for graph in info["graphs"].values():
        for backend, size in graph["bytes"].items():
            per_format[backend] = per_format.get(backend, 0) + size
    face = sum(p.stat().st_size for p in (path / "face").rglob("*") if p.is_file()) if (path / "face").is_dir() else 0
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return {"bundle": str(path), "precision": info["precision"], "total_mb": round(total / MB, 1),
            "graphs_mb": {b: round(s / MB, 1) for b, s in per_format.items()}, "face_models_mb": round(face / MB, 1)}


def avatar_sizes(bundle: Path, video_seconds: float) -> list[dict]:
    import cv2

    from .. import Pipeline, PipelineConfig
    from ..samples import FACE_IMAGE
    from ..samples.clip import head_motion_frames, write_clip

    out = []
    with tempfile.TemporaryDirectory(prefix="iplap-footprint-") as tmp:
        tmp = Path(tmp)
        video = write_clip(tmp / "face.mp4", head_motion_frames(video_seconds, size=512), lossless=False)
        faces = {"photo": FACE_IMAGE, f"video {video_seconds:g} s (512 px)": video}
        for refs in (5, 25):
            pipeline = Pipeline(bundle, PipelineConfig(refs=refs))
            for label, face in faces.items():
                path = pipeline.prepare(face).save(tmp / "a.avatar")
                with zipfile.ZipFile(path) as archive:
                    members = {i.filename: round(i.file_size / MB, 2) for i in archive.infolist()}
                out.append({"face": label, "refs": refs, "total_mb": round(path.stat().st_size / MB, 1),
                            "members_mb": dict(sorted(members.items(), key=lambda kv: -kv[1])[:5])})
                _ = cv2  # the clip writer needs OpenCV
    return out


def markdown(result: dict, command: str) -> str:
    lines = [f"# Footprint\n\n`{command}`\n\nMachine: {cpu_info()['cpu']}.\n", "| runtime install | MB |", "|---|---|"]
    lines += [f"| {label} | {mb:.0f} |" for label, mb in result["install"]["deployments_mb"].items()]
    lines += ["", "Largest packages: " + ", ".join(f"{n} {mb:.0f}" for n, mb in
                                                    list(result["install"]["packages_mb"].items())[:10]) + " (MB).",
              "", "| bundle | precision | total MB | graphs per format MB | face models MB |", "|---|---|---|---|---|"]
    for b in result["bundles"]:
        formats = ", ".join(f"{k} {v:.0f}" for k, v in b["graphs_mb"].items())
        lines.append(f"| {Path(b['bundle']).name} | {b['precision']} | {b['total_mb']:.0f} | {formats} | "
                     f"{b['face_models_mb']:.1f} |")
    lines += ["", "| avatar | N | MB | largest members MB |", "|---|---|---|---|"]
    for a in result["avatars"]:
        members = ", ".join(f"{k} {v:.1f}" for k, v in a["members_mb"].items())
        lines.append(f"| {a['face']} | {a['refs']} | {a['total_mb']:.1f} | {members} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iplap.benchmarks.footprint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, action="append", required=True)
    parser.add_argument("--video-seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = {"install": install_sizes(), "bundles": [bundle_sizes(b) for b in args.bundle],
              "avatars": avatar_sizes(args.bundle[0], args.video_seconds)}
    command = "python -m iplap.benchmarks.footprint " + " ".join(argv if argv is not None else sys.argv[1:])
    table = markdown(result, command)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "footprint.json").write_text(json.dumps({"machine": machine_info(), **result}, indent=2))
        (args.out / "footprint.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
