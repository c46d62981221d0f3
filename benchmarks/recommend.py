"""Which setting to use: a selection over the configurations ``iplap bench`` measured.

Each configuration is a point (seconds per frame, accuracy against the original
configuration: worst-frame face PSNR against the N=25 fp32 render of the same inputs).
From these points:

* :func:`pareto_front`: the configurations that no other one beats on both time and accuracy;
* :func:`best_within_budget`: the most accurate within a time per frame (the faster one on a tie);
* :func:`fastest_above`: the fastest at or above a PSNR floor (the more accurate one on a tie).

Accuracy is compared at the tables' resolution, 0.1 dB (:data:`PSNR_RESOLUTION_DB`): two
settings whose faces differ from the original by the same 0.1 dB are equally accurate, and
the faster one is preferred. Without it, float rounding (onnxruntime against OpenVINO at the
same N, 1e-4 dB apart) would decide between settings.

The functions read the results in their JSON form (``results.json``), so a selection can be
made again from a saved run (``iplap bench --from results.json --budget 1.5``).
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

from ..limits import Backend

#: PSNRs are compared rounded to this (the tables' precision).
PSNR_RESOLUTION_DB = 0.1


@dataclass(frozen=True)
class Option:
    """A measured configuration, as the recommendation sees it.

    Attributes:
        label: the configuration as the tables name it.
        backend, device, bundle, precision, refs, threads: the setting.
        seconds_per_frame: median time per rendered frame.
        psnr: worst-frame face PSNR (dB) against the original configuration; ``inf`` when
            the faces are identical to it.
        ssim: worst-frame SSIM against it.
    """

    label: str
    backend: str
    device: str
    bundle: str
    precision: str
    refs: int
    threads: int
    seconds_per_frame: float
    psnr: float
    ssim: float | None = None

    @property
    def accuracy(self) -> float:
        """The PSNR as compared: rounded to :data:`PSNR_RESOLUTION_DB` (``inf`` stays ``inf``)."""
        return self.psnr if math.isinf(self.psnr) else round(self.psnr / PSNR_RESOLUTION_DB) * PSNR_RESOLUTION_DB

    def run_command(self, face: str = "FACE", audio: str = "SPEECH", out: str = "OUT.mp4") -> str:
        """The ``iplap run`` command line for this setting."""
        args = ["iplap", "run", "--bundle", self.bundle, "--backend", self.backend]
        if self.backend == Backend.OPENVINO and self.device.upper() != "CPU":
            args += ["--device", self.device]
        args += ["--refs", str(self.refs), "--threads", str(self.threads), "--face", face, "--audio", audio,
                 "--out", out]
        return shlex.join(args)

    def to_dict(self) -> dict:
        return {"label": self.label, "backend": self.backend, "device": self.device, "bundle": self.bundle,
                "precision": self.precision, "refs": self.refs, "threads": self.threads,
                "seconds_per_frame": self.seconds_per_frame,
                "psnr_vs_original": None if math.isinf(self.psnr) else self.psnr,
                "identical_to_original": math.isinf(self.psnr), "ssim_vs_original": self.ssim,
                "command": self.run_command()}


def options(results: list[dict]) -> list[Option]:
    """The configurations that ran and were scored against the original configuration."""
    found = []
    for r in results:
        seconds = r.get("seconds_per_frame")
        if r.get("error") or seconds is None or not math.isfinite(seconds):
            continue
        if r.get("identical_to_original"):
            psnr = math.inf
        elif r.get("psnr_vs_original") is not None:
            psnr = float(r["psnr_vs_original"])
        else:
            continue
        c = r["case"]
        found.append(Option(r.get("label", ""), c["backend"], c.get("device", "CPU"), c["bundle"], c["precision"],
                            int(c["refs"]), int(c["threads"]), float(seconds), psnr, r.get("ssim_vs_original")))
    return found


def pareto_front(choices: list[Option]) -> list[Option]:
    """The configurations no other one is both faster than (or as fast) and more accurate
    than (or as accurate), fastest first."""
    front: list[Option] = []
    for option in sorted(choices, key=lambda o: (o.seconds_per_frame, -o.accuracy)):
        if not front or option.accuracy > front[-1].accuracy:
            front.append(option)
    return front


def best_within_budget(choices: list[Option], seconds_per_frame: float) -> Option | None:
    """The most accurate configuration at or under the budget (None: none fits)."""
    fitting = [o for o in choices if o.seconds_per_frame <= seconds_per_frame]
    return max(fitting, key=lambda o: (o.accuracy, -o.seconds_per_frame), default=None)


def fastest_above(choices: list[Option], min_psnr: float) -> Option | None:
    """The fastest configuration at or above the PSNR floor (None: none reaches it)."""
    good = [o for o in choices if o.psnr >= min_psnr]
    return min(good, key=lambda o: (o.seconds_per_frame, -o.accuracy), default=None)


def recommend(results: list[dict], budget: float | None = None, min_psnr: float | None = None) -> dict:
    """The recommendation as a JSON-ready dict: ``criterion`` (words), ``choice`` (an option's
    dict, or None when nothing qualifies), ``nearest`` (then: the fastest or the most accurate
    one, to say how far off it is) and ``front`` (the Pareto front)."""
    if budget is not None and min_psnr is not None:
        raise ValueError("give a time budget or a PSNR floor, not both")
    choices = options(results)
    front = pareto_front(choices)
    out: dict = {"criterion": "pareto front", "choice": None, "nearest": None,
                 "front": [o.to_dict() for o in front]}
    if budget is not None:
        choice = best_within_budget(choices, budget)
        out["criterion"] = f"most accurate against the original configuration within {budget:g} s/frame"
        out["budget_seconds_per_frame"] = budget
        if choice is None and front:
            out["nearest"] = front[0].to_dict()  # the fastest of all
    elif min_psnr is not None:
        choice = fastest_above(choices, min_psnr)
        out["criterion"] = f"fastest at or above {min_psnr:g} dB face PSNR against the original configuration"
        out["min_psnr"] = min_psnr
        if choice is None and front:
            out["nearest"] = front[-1].to_dict()  # the most accurate of all
    else:
        choice = None
    out["choice"] = None if choice is None else choice.to_dict()
    return out


def _accuracy(o: dict) -> str:
    return "identical" if o["identical_to_original"] else f"{o['psnr_vs_original']:.1f} dB"


def describe(recommendation: dict) -> list[str]:
    """The recommendation in lines of Markdown-friendly text."""
    lines = []
    choice = recommendation["choice"]
    if recommendation["criterion"] != "pareto front":
        lines.append(f"Recommended ({recommendation['criterion']}):")
        if choice is None:
            nearest = recommendation.get("nearest")
            lines.append("none of the measured configurations qualifies" + (
                f"; the nearest is {nearest['label']} ({nearest['seconds_per_frame']:.2f} s/frame, "
                f"{_accuracy(nearest)})" if nearest else "") + ".")
        else:
            lines += [f"{choice['label']}: {choice['seconds_per_frame']:.2f} s/frame, face PSNR against the original "
                      f"configuration {_accuracy(choice)}"
                      + (f", SSIM {choice['ssim_vs_original']:.3f}" if choice.get("ssim_vs_original") is not None
                         else "") + ".",
                      "", "    " + choice["command"]]
        lines.append("")
    lines.append("Pareto front (no configuration is both faster and more accurate against the original "
                 "configuration), fastest first:")
    lines.append("")
    lines.append("| configuration | s/frame | PSNR vs original | `iplap run` flags |")
    lines.append("|---|---|---|---|")
    for o in recommendation["front"]:
        flags = o["command"].split(" --face ")[0].removeprefix("iplap run ")
        lines.append(f"| {o['label']} | {o['seconds_per_frame']:.2f} | {_accuracy(o)} | `{flags}` |")
    return lines
