"""IP_LAP's fixed numbers, each defined once (the mel spectrogram's are :class:`~.audio.MelConfig`).

Every module that needs one imports it from here, and the bundle manifest records them
(``iplap.runtime.bundle.CONSTANTS``), so that a bundle made for other numbers is refused.
The limits that every front end checks (the number of references, sample rates, backend
names, H.264 quality) are :mod:`iplap.limits`', imported here for the runtime.
"""

from ..limits import (BACKENDS, DEFAULT_CRF, DEFAULT_REFS, INFERENCE_PRECISIONS, MAX_CRF, MAX_REFS,  # noqa: F401
                      MAX_KEYFRAME_EVERY, MAX_SAMPLE_RATE, MIN_CRF, MIN_REFS, MIN_SAMPLE_RATE, Backend,
                      check_backend, check_crf, check_keyframe_every, check_refs)

#: Video frames per second: faces are converted to it and outputs are written at it.
FPS = 25
#: Audio samples per second that the model hears (the mel spectrogram's input).
SAMPLE_RATE = 16000
#: Mel frames in one window: the audio of one video frame, as the models take it.
MEL_WINDOW = 16
#: Frames in one landmark window (T): the landmark generator predicts 5 at a time.
T_FRAMES = 5
#: Reference landmark sets (Nl) the landmark generator takes.
N_LANDMARK_REFS = 15
#: Width of the landmark generator's embeddings (mel, pose, references) and transformer.
LANDMARK_EMBEDDING = 512
#: Side of the square face crops, sketches and rendered faces, in pixels.
IMAGE_SIZE = 128
#: Output frames the first render of a stream makes: frames 0, 1 and 2 (the original writes
#: its first rendered frame three times, so that there is one frame per mel window); render
#: ``i > 0`` makes frame ``i + 2`` (see :func:`frames_of_render`, :func:`render_of_frame`).
FIRST_RENDER_FRAMES = 3

#: How a pipeline follows faces from frame to frame (``PipelineConfig.face_mode``).
FACE_MODES = ("static", "track")
#: What to do with frames of the face video where no face is found (``PipelineConfig.on_missing_face``).
MISSING_FACE_MODES = ("pass", "fill", "error")


# -- the render-to-frame rule -------------------------------------------------------------------

def frames_of_render(render: int) -> tuple[int, ...]:
    """The output frames render ``render`` makes: (0, 1, 2) for the first, ``render + 2`` after."""
    lead = FIRST_RENDER_FRAMES - 1
    return tuple(range(FIRST_RENDER_FRAMES)) if render == 0 else (render + lead,)


def render_of_frame(frame: int) -> int:
    """The render that makes output frame ``frame`` (the inverse of :func:`frames_of_render`);
    also the landmark window's offset of that frame in the face video."""
    return max(0, frame - (FIRST_RENDER_FRAMES - 1))
