"""Sample inputs shipped with the package (see README.md in this folder)."""

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent
FACE_IMAGE = SAMPLES_DIR / "astronaut.png"
SPEECH_16K = SAMPLES_DIR / "speech_16k.wav"
