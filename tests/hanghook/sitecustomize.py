"""The hung-worker hook of the batch tests (tests only: never installed, never imported by iplap).

This folder goes first on ``PYTHONPATH`` of the ``iplap batch`` processes the tests start and
of the environment of the run's loopback Ray cluster (see ``tests/conftest.py``), so Python imports
this ``sitecustomize`` at start-up in each of them, their ``spawn`` workers and Ray's workers
included. Where ``IPLAP_TEST_HANG_FILE`` names a face or speech file (its name, e.g.
``hang.png``), it patches ``iplap.batch.work.prepare_face`` and ``render_job`` as that module
is imported (a meta-path hook: ``iplap.batch.local`` and ``ray_runner`` bind them with
``from .work import ...`` right after), so that a worker given that file hangs instead of
working, as a wedged worker would, until it is killed. Without the variable it does nothing.
"""

from __future__ import annotations

import os
import sys

VARIABLE = "IPLAP_TEST_HANG_FILE"
TARGET = "iplap.batch.work"


def _hang_on(name: str):
    import functools
    import inspect
    import threading
    from pathlib import Path

    def hanging(original, argument: str):
        signature = inspect.signature(original)

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            if Path(signature.bind(*args, **kwargs).arguments[argument]).name == name:
                threading.Event().wait()  # until this worker is killed
            return original(*args, **kwargs)

        return wrapper

    def patch(module) -> None:
        module.prepare_face = hanging(module.prepare_face, "face")
        module.render_job = hanging(module.render_job, "audio")

    class Loader:
        def __init__(self, loader):
            self.loader = loader

        def create_module(self, spec):
            return self.loader.create_module(spec)

        def exec_module(self, module):
            self.loader.exec_module(module)
            patch(module)

        def __getattr__(self, attribute):
            return getattr(self.loader, attribute)

    class Finder:
        @staticmethod
        def find_spec(fullname, path, target=None):
            if fullname != TARGET:
                return None
            for finder in sys.meta_path:
                if finder is Finder or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    spec.loader = Loader(spec.loader)
                    return spec
            return None

    sys.meta_path.insert(0, Finder)


if os.environ.get(VARIABLE):
    _hang_on(os.environ[VARIABLE])


def _next_sitecustomize() -> None:
    """Run the sitecustomize this one hides, if any (none in the project's environment)."""
    import importlib.machinery

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None and os.path.abspath(spec.origin or "") != os.path.abspath(__file__):
        import importlib.util

        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


_next_sitecustomize()
