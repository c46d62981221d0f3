"""The torch-free runtime.

It imports only onnxruntime, openvino, numpy, opencv-python-headless, soundfile, numba,
PyAV and tqdm (``tests/test_boundary.py`` checks this). What lives where:

* ``pipeline``: :class:`~.pipeline.Pipeline`, the entry object (prepare, render, stream);
  ``config``: its :class:`~.config.PipelineConfig`; ``session``: :class:`~.session.StreamSession`,
  one render's or stream's state; ``reports``: :class:`~.reports.RenderReport`,
  :class:`~.reports.Frame` and the :class:`~.reports.StageClock`.
* ``face_source``: a face file, photo or video by its content (:func:`~.face_source.face_is_photo`),
  as prepare, render and stream read it; ``tracking``: face landmarks of every frame, and the
  face crops; ``face`` (detection and mesh); ``landmarks`` (the original's bookkeeping);
  ``avatar`` (a prepared face, and its file).
* The model's stages: ``audio`` (decode, mel), ``resample``, ``sketch``, ``backends`` (one
  factory per inference engine), ``bundle`` (the exported graphs), ``warp`` (the Numba
  motion-field kernel), ``renderer``, ``compose`` (paste-back).
* ``media`` (video and image in, mp4 out), ``files`` (atomic writes, hashes), ``constants``
  (IP_LAP's numbers and the limits every front end checks).
"""
