"""``iplap bench --live``: the live stream's frame rate and latency against the machine's ceiling.

For every bundle, backend, thread count, avatar (the sample photo, and a face video made
from it with head motion) and number of references N, in a fresh process per
configuration and round (:func:`~.live_measure.measure_live_round`), through the public live API
(``Pipeline.open_live``, speech pushed as a TTS would push it):

* **sustained frame rate**: a turn rendered without a clock (``realtime=False``: every
  frame gets its picture, as fast as the machine renders), timed from its second render
  to its last: pictures per second the live loop sustains, every stage included
  (landmarks, sketches, crop, graphs, warp, blend, cross-fade);
* **first-frame latency**: a turn on the wall clock (``realtime=True``), from its first
  sample pushed to its first speaking frame shown (the model needs about 80 ms of
  speech before its first window is complete), and what that turn did: pictures
  rendered per second, held frames, the session's ``k`` and real-time factor;
* **interruption latency**: ``interrupt()`` during that turn to the first idle frame;
* **the frame rate the ceiling allows**: the renderer graphs' multiply-adds per frame
  (flow_modulations + flow_head x distinct references + translation) over the
  convolution ceiling (:mod:`.ceiling`) of the same backend, precision and thread count,
  measured before the grid and after it (the faster counts); and the ratio of the two.
  Best against best: the fastest round's rate against the ceiling's fastest run;
* **accuracy**: PSNR of the rendered speaking frames (the face box) against the
  reference configuration's (the fp32 bundle on onnxruntime at the largest N of the
  grid, same avatar, same speech), so that the live choice can prefer the most accurate.

The live choice (:func:`~.live_scoring.live_choice`): per avatar kind, the most accurate configuration
that sustains 25 fps; where none does, the fastest, with the picture rate it sustains
(a live session renders every k-th frame and holds the picture between).

Outputs ``live.json`` and ``live.md`` in the output folder.

This module runs the steps in order (:func:`run_live_bench`); the config and the grid are
in :mod:`.live_grid`, a round and the soak in :mod:`.live_measure`, the pooled results,
accuracy and the choice in :mod:`.live_scoring`, and ``live.md`` in :mod:`.live_report`.
What a live session did is reported as ``LiveStats.as_dict()`` (under ``realtime`` in a
result, and in each soak), extended with the benchmark's own figures.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from ..errors import IplapError
from .grid import Skipped
from .live_grid import LiveBenchConfig, LiveCase, live_cases
from .live_measure import live_inputs, measure_live_round, soak_live
from .live_report import live_markdown
from .live_scoring import STACK_FIELDS, ceiling_entry, live_choice, pool_live, score_live
from .measure import (build_ceiling_models, has_calibrate_extra, in_process, machine_info, measure_ceiling_run,
                      merge_ceilings)
from .scoring import graph_gmac, json_default

log = logging.getLogger(__name__)


class _Grid:
    """The grid's rounds, each configuration in a fresh process, and the convolution ceiling
    measured before the grid, around every round and after the grid (one progress bar)."""

    def __init__(self, config: LiveBenchConfig, cases: list[LiveCase], measures_ceiling: bool, bar):
        self.config, self.cases, self.measures_ceiling, self.bar = config, cases, measures_ceiling, bar
        self.ceiling_runs: list[dict] = []
        self.files: dict[str, str] | None = None  # the ceiling's models, built once
        # Right before and right after each round, its own ceiling (backend, precision, threads):
        # a burst and one window, so that the ceiling is sampled through the same phases of the
        # host as the rounds, and each round has a share of what the machine did at the time.
        self.between = asdict(dataclasses.replace(config.ceiling_config, windows=min(1, config.ceiling_config.windows)))

    def ceiling(self, when: str, case: LiveCase | None = None) -> None:
        config = self.config
        if case is None:
            self.bar.set_postfix_str(f"convolution ceiling, {when} the grid")
            run = in_process(measure_ceiling_run, config.backends, config.threads, config.device,
                             asdict(config.ceiling_config), self.files)
        else:
            run = in_process(measure_ceiling_run, (case.backend,), (case.threads,), case.device, self.between,
                             self.files, (case.ceiling_precision,))
        self.ceiling_runs.append({"when": when, **run})
        self.bar.update(case is None)

    def before(self, folder: Path) -> None:
        """The ceiling's models (built once, in ``folder``), and the ceiling before the grid."""
        if self.measures_ceiling:
            self.bar.set_postfix_str("convolution ceiling: its models")
            built = in_process(build_ceiling_models, str(folder / "ceiling"), asdict(self.config.ceiling_config))
            self.files = None if "error" in built else built
            self.ceiling("before")

    def rounds(self, folder: Path, faces: dict[str, str], outputs: dict[int, str]) -> dict[int, list[dict]]:
        """Every round of every configuration (the first round's faces to ``outputs``), then
        the ceiling after the grid."""
        rounds: dict[int, list[dict]] = {k: [] for k in range(len(self.cases))}
        for round_ in range(self.config.repeats):
            for k, case in enumerate(self.cases):
                output = outputs[k] if round_ == 0 else str(folder / "again.npz")
                rounds[k].append(self.round(round_, case, faces[case.avatar], output))
        if self.measures_ceiling:
            self.ceiling("after")
        return rounds

    def round(self, round_: int, case: LiveCase, face: str, output: str) -> dict:
        """One round of ``case``, between two measurements of its own ceiling."""
        config = self.config
        where = f"(round {round_ + 1}, {case.label})"
        self.bar.set_postfix_str(f"{case.label} (round {round_ + 1}/{config.repeats})")
        beside = []
        around = self.measures_ceiling and self.files
        if around:
            self.ceiling(f"ahead of {where}", case)
            beside.append(self.ceiling_runs[-1])
        result = in_process(measure_live_round, asdict(case), face, config.frames, config.realtime_seconds, output)
        if around:
            self.ceiling(f"between {where}", case)
            beside.append(self.ceiling_runs[-1])
        for block, (_, key) in STACK_FIELDS.items():
            result[key] = [ceiling_entry(run, case, block) for run in beside]
        self.bar.update()
        return result


def run_live_bench(config: LiveBenchConfig, show_progress: bool = True) -> dict:
    """Measure the live grid and write live.json and live.md; the report."""
    from tqdm import tqdm

    from ..runtime.bundle import Bundle

    if not config.bundles:
        raise IplapError("give at least one --bundle")
    bundles = {str(p): Bundle.load(p) for p in config.bundles}
    cases = live_cases(config, bundles)
    macs_ok, missing = has_calibrate_extra()
    measures_ceiling = config.ceiling and macs_ok
    bar = tqdm(total=len(cases) * config.repeats + 2 * measures_ceiling, desc="live benchmark", unit="config",
               file=sys.stderr, disable=not show_progress)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    grid = _Grid(config, cases, measures_ceiling, bar)
    reference = next((p for p, b in bundles.items() if b.precision == "fp32"), next(iter(bundles)))
    gmac = graph_gmac(bundles[reference]) if macs_ok else None
    with tempfile.TemporaryDirectory(prefix="iplap-live-bench-") as tmp:
        grid.before(Path(tmp))
        faces = live_inputs(Path(tmp), config.clip_seconds)
        outputs = {k: str(Path(tmp) / f"case{k}.npz") for k in range(len(cases))}
        rounds = grid.rounds(Path(tmp), faces, outputs)
        bar.close()
        ceilings = merge_ceilings(grid.ceiling_runs) if grid.ceiling_runs else Skipped(
            f"needs {missing} (pip install 'iplap[calibrate]')" if not macs_ok else "")
        results = [pool_live(case, rounds[k], gmac, ceilings) for k, case in enumerate(cases)]
        score_live(cases, results, outputs)
        choice = live_choice(results)
        soaks = _soak(config, choice, faces)
    report = {"command": config.command, "machine": machine_info(), "config": _config_dict(config),
              "ceiling": ceilings, "graph_gmac": gmac if gmac is not None else Skipped(f"needs {missing}"),
              "results": results, "choice": choice, "soak": soaks or Skipped("no --soak")}
    (config.out_dir / "live.json").write_text(json.dumps(report, indent=2, default=json_default) + "\n")
    (config.out_dir / "live.md").write_text(live_markdown(report))
    return report


def _soak(config: LiveBenchConfig, choice: dict, faces: dict[str, str]) -> dict:
    """Each avatar's live choice, run for ``config.soak_seconds`` as an agent would (none at 0)."""
    soaks = {}
    if config.soak_seconds > 0:
        for avatar, c in choice.items():
            log.info("soak: %s for %.0f s", c["label"], config.soak_seconds)
            soaks[avatar] = {"label": c["label"], **in_process(soak_live, c["case"], faces[avatar],
                                                               config.soak_seconds)}
    return soaks


def _config_dict(config: LiveBenchConfig) -> dict:
    """The config as live.json records it (tuples as lists of text, paths as text)."""
    return {k: (list(map(str, v)) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
            for k, v in asdict(config).items()}


__all__ = ["LiveBenchConfig", "run_live_bench"]
