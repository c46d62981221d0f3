"""Inference backends: one factory each for ONNX Runtime and OpenVINO.

Every session or compiled model in the runtime is built here, with explicit threads,
device and cache directory, so that no call site forgets a setting. In particular the
OpenVINO factory sets the inference precision explicitly: its CPU plugin runs in bf16 by
default on CPUs that have bf16, which is not the fp32 the goldens were made with.

A backend that is not installed is an error naming what to install; there is no silent
fallback to another backend.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ..cache import cache_dir
from ..errors import BackendError, IplapError, first_line
from ..telemetry import import_openvino
from .constants import INFERENCE_PRECISIONS, Backend, check_backend

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class BackendConfig:
    """How to run graphs. Per call, not part of the model bundle.

    Attributes:
        backend: a :class:`Backend` or its name, ``"onnxruntime"`` or ``"openvino"``.
        device: OpenVINO device (``"CPU"``, ``"GPU"``, ``"AUTO"``, ...). ONNX Runtime: ``"CPU"``.
        threads: intra-op threads; 0 lets the backend choose (all physical cores).
        cache_dir: OpenVINO's model cache (``CACHE_DIR``): compiled models load in a fraction
            of the time next time (seconds, not tens of seconds). ``None`` (default): the
            ``openvino`` folder of iplap's cache folder (:func:`iplap.cache.cache_dir`), where
            it can be written; ``model_cache=False`` turns the cache off.
        model_cache: whether OpenVINO caches compiled models at all (on by default).
        inference_precision: OpenVINO's inference precision hint (``INFERENCE_PRECISIONS``):
            ``"f32"`` (exact), ``"bf16"`` or ``"f16"``.
            ``None`` (default): what the model bundle was calibrated for, else f32. Never
            the device's own default, which is bf16 on CPUs that have it.
        streams: calls of one graph meant to run at once, from as many threads (a live
            session with renders in flight): the threads are shared among them. OpenVINO:
            ``NUM_STREAMS`` (1: the latency hint, one stream using every thread);
            onnxruntime: each call's intra-op threads are ``threads // streams``. The
            results are the same whatever the number (only the work is divided otherwise).
        fuse_flow: OpenVINO only: run the renderer's flow_modulations and flow_head as one
            compiled model (:func:`compose_openvino`), so the 12 modulation maps (48 MB a
            frame in f32) stay inside the plugin in its own layout and precision instead of
            being reordered, copied out and copied back in. Same operations; ``False`` runs
            the two graphs one after the other (for comparison).
    """

    backend: Backend | str = Backend.ONNXRUNTIME
    device: str = "CPU"
    threads: int = 0
    cache_dir: Path | None = None
    model_cache: bool = True
    inference_precision: str | None = None
    streams: int = 1
    fuse_flow: bool = True

    def __post_init__(self):
        try:
            object.__setattr__(self, "backend", check_backend(self.backend))
        except IplapError as exc:
            raise BackendError(exc.message) from None
        if self.threads < 0:
            raise BackendError(f"threads must be >= 0, got {self.threads}")
        if self.backend == Backend.ONNXRUNTIME and self.device.upper() != "CPU":
            raise BackendError(f"the onnxruntime backend runs on CPU only, not {self.device!r}; "
                               "the openvino backend runs on other devices", setting="backend", suggestion=Backend.OPENVINO.value)
        if self.inference_precision not in (None, *INFERENCE_PRECISIONS):
            raise BackendError(f"unknown inference precision {self.inference_precision!r}: choose one of "
                               f"{', '.join(INFERENCE_PRECISIONS)}")
        if isinstance(self.streams, bool) or not isinstance(self.streams, int) or self.streams < 1:
            raise BackendError(f"streams must be a whole number >= 1, got {self.streams!r}")

    @property
    def threads_per_stream(self) -> int:
        """Threads of one call when ``streams`` calls run at once (0: the backend chooses)."""
        return max(1, self.threads // self.streams) if self.threads else 0


class InferenceModel(Protocol):
    """A loaded graph: named numpy inputs in, named numpy outputs out."""

    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass
class OnnxRuntimeModel:
    session: object
    input_names: list[str] = field(init=False)
    output_names: list[str] = field(init=False)

    def __post_init__(self):
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, outputs))


@dataclass(frozen=True)
class OpenVINOSource:
    """What an OpenVINO model was compiled from: enough to read and compile it again
    (:func:`compose_openvino` joins two graphs from their sources)."""

    path: Path
    device: str
    properties: dict


class OpenVINOModel:
    """A compiled OpenVINO model; one infer request per thread that uses it."""

    def __init__(self, compiled, output_names: list[str] | None = None, source: OpenVINOSource | None = None):
        self.compiled = compiled
        self.source = source
        self.input_names = [p.get_any_name() for p in compiled.inputs]
        # A port can carry several tensor names (OpenVINO fuses producers into outputs);
        # name each output as the model file declares it when the caller knows those names.
        self.output_names = [_port_name(p, output_names) for p in compiled.outputs]
        self._ports = dict(zip(self.output_names, compiled.outputs))
        self._local = threading.local()

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return _infer(request, feeds, self._ports)


def _infer(request, feeds: dict[str, np.ndarray], ports: dict) -> dict[str, np.ndarray]:
    # share_inputs: the plugin reads the caller's arrays in place (the call is synchronous,
    # and the request keeps a reference to each array until its next call).
    request.infer({name: np.ascontiguousarray(value) for name, value in feeds.items()}, share_inputs=True)
    # Copy out: the request reuses its output buffers on the next call.
    return {name: np.array(request.get_tensor(port).data) for name, port in ports.items()}


#: Distinct batch sizes a composed model keeps compiled at once (an avatar has one: its
#: distinct references; a server with photo and video avatars, a few).
COMPOSED_BATCHES_KEPT = 4


class ComposedOpenVINOModel:
    """Two OpenVINO graphs run as one: ``first``'s outputs named in ``links`` feed the
    inputs of ``second`` of the same names; the inputs are the others of both, the
    outputs ``second``'s. Compiled for each batch of ``batch_input`` when first used
    (static shapes: the CPU plugin cannot broadcast ``first``'s batch-1 outputs over a
    dynamic batch here), the last :data:`COMPOSED_BATCHES_KEPT` kept."""

    def __init__(self, first: OpenVINOSource, second: OpenVINOSource, links: tuple[str, ...], batch_input: str,
                 output_names: list[str] | None = None):
        self.first, self.second, self.links, self.batch_input = first, second, tuple(links), batch_input
        self._preferred = output_names
        self._model = self._join()
        self.input_names = [p.get_any_name() for p in self._model.inputs]
        self.output_names = [_port_name(p, output_names) for p in self._model.outputs]
        self._compiled: dict[int, tuple[object, dict]] = {}  # batch -> (compiled, ports), oldest first
        self._lock = threading.Lock()
        self._local = threading.local()

    def _join(self):
        core = openvino_core()
        first, second = core.read_model(str(self.first.path)), core.read_model(str(self.second.path))
        produced = {}
        for result in first.get_results():
            for name in result.input_value(0).get_names():
                produced[name] = result.input_value(0)
        kept = []
        for parameter in second.get_parameters():
            link = next((n for n in self.links if n in parameter.output(0).get_names()), None)
            if link is None:
                kept.append(parameter)
                continue
            if link not in produced:
                raise BackendError(f"{self.first.path.name} has no output {link!r} for {self.second.path.name}")
            for target in list(parameter.output(0).get_target_inputs()):
                target.replace_source_output(produced[link])
        ov = import_openvino()

        return ov.Model(second.get_results(), kept + list(first.get_parameters()),
                        f"{first.get_friendly_name()}+{second.get_friendly_name()}")

    def is_compiled_for(self, batch: int) -> bool:
        with self._lock:
            return batch in self._compiled

    def compiled_for(self, batch: int):
        """The model compiled for ``batch`` rows of ``batch_input`` (compiled now if new)."""
        with self._lock:
            if batch in self._compiled:
                return self._compiled[batch]
            model = self._model.clone()
            shape = model.input(self.batch_input).get_partial_shape()
            shape[0] = batch
            model.reshape({self.batch_input: shape})
            try:
                compiled = openvino_core().compile_model(model, self.second.device, self.second.properties)
            except RuntimeError as exc:
                raise BackendError(f"OpenVINO cannot compile {self._model.get_friendly_name()} for batch "
                                   f"{batch}: {first_line(exc)}") from None
            ports = {_port_name(p, self._preferred): p for p in compiled.outputs}
            self._compiled[batch] = compiled, ports
            while len(self._compiled) > COMPOSED_BATCHES_KEPT:
                self._compiled.pop(next(iter(self._compiled)))
            return compiled, ports

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = int(np.shape(feeds[self.batch_input])[0])
        compiled, ports = self.compiled_for(batch)
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}  # batch -> (compiled, request) of this thread
        if batch not in requests or requests[batch][0] is not compiled:
            for old in [b for b in requests if b not in self._compiled]:
                del requests[old]  # batches no longer kept
            requests[batch] = compiled, compiled.create_infer_request()
        return _infer(requests[batch][1], feeds, ports)


def compose_openvino(first, second, links: tuple[str, ...], batch_input: str,
                     output_names: list[str] | None = None) -> ComposedOpenVINOModel | None:
    """``first`` then ``second`` as one model (:class:`ComposedOpenVINOModel`), or None
    where they cannot be: not both OpenVINO models compiled from files by
    :func:`load_model`, or compiled with different devices or properties (precision
    hints, streams)."""
    a, b = getattr(first, "source", None), getattr(second, "source", None)
    if not isinstance(first, OpenVINOModel) or not isinstance(second, OpenVINOModel) or a is None or b is None:
        return None
    if (a.device, a.properties) != (b.device, b.properties):
        return None
    return ComposedOpenVINOModel(a, b, links, batch_input, output_names)


def _port_name(port, preferred: list[str] | None) -> str:
    names = port.get_names()
    for name in preferred or ():
        if name in names:
            return name
    return port.get_any_name()


def load_model(path: str | Path, config: BackendConfig, output_names: list[str] | None = None) -> InferenceModel:
    """Load one graph file with the configured backend.

    ``output_names``: the graph's declared outputs, when known. OpenVINO may give an
    output port several tensor names; these pick the right one.
    """
    path = Path(path)
    if config.backend == Backend.ONNXRUNTIME:
        return _load_onnxruntime(path, config)
    return _load_openvino(path, config, output_names)


def _load_onnxruntime(path: Path, config: BackendConfig) -> OnnxRuntimeModel:
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - a runtime dependency
        raise BackendError(f"onnxruntime is not installed ({exc}); pip install onnxruntime") from None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = config.threads_per_stream
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    # Idle worker threads otherwise spin after each call and steal the cores from the
    # next session; the pipeline alternates between several graphs every frame.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # One memory arena for every graph of the process: each session's own arena keeps its own
    # peak, and the pipeline runs five graphs in turn (measured: a 720p face video at N = 25,
    # fp32, peaked at 1361 MB with an arena per graph, 1062 MB with one; the frames are the same).
    _share_onnxruntime_arena(ort)
    options.add_session_config_entry("session.use_env_allocators", "1")
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        raise BackendError(f"onnxruntime cannot load {path.name}: {first_line(exc)}") from None
    return OnnxRuntimeModel(session)


_ARENA_LOCK = threading.Lock()
_arena_shared = False


def _share_onnxruntime_arena(ort) -> None:
    """Register the process's one CPU arena with onnxruntime's environment (once)."""
    global _arena_shared
    with _ARENA_LOCK:
        if not _arena_shared:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))  # onnxruntime's defaults
            _arena_shared = True


_CORE = None
_CORE_LOCK = threading.Lock()


def openvino_core():
    """The process's OpenVINO Core (one per process, as OpenVINO recommends)."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            try:
                ov = import_openvino()
            except ImportError as exc:  # pragma: no cover - a runtime dependency
                raise BackendError(f"openvino is not installed ({exc}); pip install openvino") from None
            _CORE = ov.Core()
        return _CORE


def openvino_devices() -> list[str]:
    return list(openvino_core().available_devices)


def check_openvino_device(device: str) -> None:
    """Raise a clear error when ``device`` is not present (AUTO/MULTI/HETERO name others)."""
    available = openvino_devices()
    base = device.split(":")[0].split(".")[0].upper()
    if base in ("AUTO", "MULTI", "HETERO", "BATCH"):
        return
    if device.upper() not in (d.upper() for d in available) and base not in (d.split(".")[0].upper() for d in available):
        raise BackendError(f"OpenVINO device {device!r} is not present; available: {', '.join(available) or 'none'}")


def openvino_properties(config: BackendConfig) -> dict[str, object]:
    if config.streams > 1:  # several requests at once, each on its own stream of the threads
        props: dict[str, object] = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": config.streams}
    else:
        props = {"PERFORMANCE_HINT": "LATENCY"}
    device = config.device.upper()
    if config.threads and device.startswith("CPU"):
        props["INFERENCE_NUM_THREADS"] = config.threads
    if not device.startswith(("AUTO", "MULTI", "HETERO")):
        props["INFERENCE_PRECISION_HINT"] = config.inference_precision or "f32"
    folder = model_cache_dir(config)
    if folder is not None:
        props["CACHE_DIR"] = str(folder)
    return props


def model_cache_dir(config: BackendConfig) -> Path | None:
    """OpenVINO's model cache folder for ``config`` (made where missing), or None: caching off,
    or the default folder cannot be written (a read-only home: models compile each time)."""
    if not config.model_cache:
        return None
    if config.cache_dir is not None:
        Path(config.cache_dir).mkdir(parents=True, exist_ok=True)
        return Path(config.cache_dir)
    try:
        folder = cache_dir("openvino")
        folder.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError) as exc:  # no writable home: not an error, only slower starts
        _warn_once(f"OpenVINO's model cache is off: {first_line(exc)} (set IPLAP_CACHE or cache_dir to a "
                   "writable folder for faster starts)")
        return None
    return folder


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning(message)


def _load_openvino(path: Path, config: BackendConfig, output_names: list[str] | None = None) -> OpenVINOModel:
    core = openvino_core()
    check_openvino_device(config.device)
    props = openvino_properties(config)
    try:
        compiled = core.compile_model(str(path), config.device, props)
    except RuntimeError as exc:
        raise BackendError(f"OpenVINO cannot compile {path.name} for {config.device}: {first_line(exc)}") from None
    return OpenVINOModel(compiled, output_names, OpenVINOSource(path, config.device, props))



def for_bundle(config: BackendConfig, hint: str | None) -> BackendConfig:
    """``config`` with the bundle's OpenVINO precision hint, unless the caller chose one."""
    if config.inference_precision is not None or config.backend != Backend.OPENVINO or not hint:
        return config
    return dataclasses.replace(config, inference_precision=hint)
