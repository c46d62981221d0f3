"""OpenVINO's and NNCF's usage telemetry, in the processes of iplap's own tools.

The ``openvino-telemetry`` package (a dependency of openvino and of nncf) sends usage events
of OpenVINO's model converter (``ov.convert_model``) and of NNCF to Google Analytics. Both
create it with the opt-in dialog turned off, so where the user never recorded a choice it
sends without asking. NNCF sends from a worker thread through a forked process; with Numba's
TBB threading layer loaded (the warp kernel) each event also printed "Numba: Attempted to
fork from a non-main thread, the TBB library may be in an invalid state in the child
process." (39 such lines in one ``iplap calibrate``, measured).

iplap does not make that choice for its users. :func:`decline_unless_chosen`, called by the
steps that convert or quantize models (``iplap export``, ``iplap calibrate``, the ceiling of
``iplap bench``), makes a missing choice count as declined in this process; a recorded
choice (openvino-telemetry's ``opt_in_out --opt_in`` or ``--opt_out``) is respected, and
nothing is written to the user's consent file. Inference (the runtime) sends nothing either
way: OpenVINO's ``Core`` has no telemetry.
"""

from __future__ import annotations

import functools


def decline_unless_chosen() -> None:
    """Treat "no choice recorded" as "declined" for openvino-telemetry in this process
    (idempotent; nothing to do where the package is not installed). Call it before nncf is
    first imported: NNCF asks for consent once, at import."""
    try:
        from openvino_telemetry.utils import opt_in_checker
    except ImportError:
        return
    checker = opt_in_checker.OptInChecker
    if getattr(checker.check, "_iplap_declines_unchosen", False):
        return
    original = checker.check
    no_choice = opt_in_checker.ConsentCheckResult.NO_FILE
    declined = opt_in_checker.ConsentCheckResult.DECLINED

    @functools.wraps(original)
    def check(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        return declined if result == no_choice else result

    check._iplap_declines_unchosen = True
    checker.check = check


def import_openvino():
    """``import openvino`` with :func:`decline_unless_chosen` first: importing openvino
    imports its model converter, which sends an "import" event at once."""
    decline_unless_chosen()
    import openvino

    return openvino
