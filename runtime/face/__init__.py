"""Face detection and the FaceMesh attention model, without mediapipe."""
