"""What a worker does for a job, wherever it runs (a local worker process or a Ray task).

Two steps, each a plain function over files: :func:`prepare_face` makes the avatar of a
face once (jobs that share the face reuse it), and :func:`render_job` renders a job's
speech with that avatar into an mp4. Both use the public API only, with the settings an
``iplap run`` with the same flags would use, so the outputs are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import BackendConfig, Pipeline, PipelineConfig
from .manifest import JobOptions

# One loaded pipeline per (bundle, backend, threads) in each worker process: loading the graphs
# costs seconds, a job of a few frames not much more.
_PIPELINES: dict[tuple[str, str, int], Pipeline] = {}


@dataclass(frozen=True)
class Rendered:
    frames: int
    seconds: float


def pipeline_for(bundle: Path, options: JobOptions, threads: int) -> Pipeline:
    key = (str(bundle), options.backend, threads)
    if key not in _PIPELINES:
        config = PipelineConfig(backend=BackendConfig(options.backend, threads=threads), refs=options.refs)
        _PIPELINES[key] = Pipeline(bundle, config)
    return _PIPELINES[key].with_config(refs=options.refs, keyframe_every=options.keyframe_every)


def prepare_face(bundle: Path, face: Path, options: JobOptions, threads: int, avatar: Path) -> int:
    """Prepare ``face`` into the avatar file ``avatar``; returns its number of frames."""
    prepared = pipeline_for(bundle, options, threads).prepare(face)
    prepared.save(avatar)
    return prepared.n_frames


def render_job(bundle: Path, avatar: Path, audio: Path, options: JobOptions, threads: int, out: Path,
               on_frame=None) -> Rendered:
    """Render ``audio`` with the prepared ``avatar`` into ``out`` (written whole or not at all)."""
    pipeline = pipeline_for(bundle, options, threads)
    report = pipeline.render(pipeline.load_avatar(avatar), audio, out, crf=options.crf, on_progress=on_frame)
    return Rendered(report.frames, report.wall_seconds)

