"""IP_LAP's fixed numbers, each defined once (the mel spectrogram's are :class:`~.audio.MelConfig`).

Every module that needs one imports it from here, and the bundle manifest records them
(``iplap.runtime.bundle.CONSTANTS``), so that a bundle made for other numbers is refused.
"""

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
#: Reference images (N) the renderer takes in the original release.
DEFAULT_REFS = 25
#: Side of the square face crops, sketches and rendered faces, in pixels.
IMAGE_SIZE = 128

# -- limits and names that every front end checks the same way ------------------------------------
#: The numbers of reference images N a pipeline accepts (inclusive).
MIN_REFS, MAX_REFS = 1, 100
#: The sample rates (Hz, inclusive) that speech may have, in any format or stream.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 192000
#: The inference backends.
BACKENDS = ("onnxruntime", "openvino")
#: The calibration gate's default: a quantized bundle is kept only if its faces' mean PSNR
#: against the exact (fp32) bundle reaches this many dB.
MIN_GATE_PSNR_DB = 35.0
#: How a pipeline follows faces from frame to frame (``PipelineConfig.face_mode``).
FACE_MODES = ("static", "track")
#: What to do with frames of the face video where no face is found (``PipelineConfig.on_missing_face``).
MISSING_FACE_MODES = ("pass", "fill", "error")
