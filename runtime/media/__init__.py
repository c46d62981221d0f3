"""Media in and out, in-process (PyAV and OpenCV; no ffmpeg command-line tool).

In: a face image or video, decoded to BGR frames on the 25 fps timeline. Out: an mp4 of
H.264 with the speech as AAC, renamed into place only when everything succeeded. Whether a
face file is a photo or a video is decided in :mod:`..face_source`. One module per job:

* :mod:`.probe` - what a file is: the checks, the opened container, its video stream;
* :mod:`.read` - images and videos to frames, the 25 fps timeline, the bounded frame cache;
* :mod:`.write` - the mp4 writer, and the output checks made before any rendering.
"""

from .probe import IMAGE_SUFFIXES, MediaSource
from .read import FrameTimeline, StillFrames, VideoFrames, VideoScan, as_bgr, read_image, read_video_frames
from .write import AudioTrackFormat, VideoWriter, check_audio_encoder, check_output_path

__all__ = ["IMAGE_SUFFIXES", "AudioTrackFormat", "FrameTimeline", "MediaSource", "StillFrames", "VideoFrames",
           "VideoScan", "VideoWriter", "as_bgr", "check_audio_encoder", "check_output_path", "read_image",
           "read_video_frames"]
