"""``iplap bench``: accuracy against speed, per backend, precision, number of references and threads.

Every configuration runs in a fresh process (so its peak memory and thread settings are
its own) on the same fixed inputs, made from the shipped samples: a clip of the sample
photo with small head motion, and a slice of the sample speech. For each it measures:

* time per rendered frame (median and range over all timed frames of all rounds, after
  warm-up), and per stage (landmarks, sketches, renderer graphs, warp, blend, decode, encode);
* the first-frame latency of streaming, and the per-video preparation time;
* peak RSS of the process;
* accuracy against the fp32 exact path (the fp32 bundle on onnxruntime, same N): PSNR and
  SSIM of the rendered 128x128 faces, and the error of the predicted landmarks in pixels
  of a 128 px crop;
* the same accuracy against the original configuration (the fp32 bundle on onnxruntime,
  N=25, rendered once per run on the same inputs): the loss from a lower N and the loss
  from precision together, which is what a user accepts by choosing a setting;
* for each renderer graph: its GMAC per frame, GMAC/s, and its share of this machine's
  convolution ceiling (:mod:`.ceiling`, measured for each backend, precision and thread
  count before the grid and again after it: the faster of the two counts); and, across
  the thread counts, each graph's speed-up and parallel efficiency.

At the end, a selection over the results (:mod:`.recommend`): the Pareto front of time
against accuracy vs the original configuration, and with a time budget (or a PSNR floor)
the setting to use, as ``iplap run`` flags.

The original-style torch renderer (the whole flow network per reference per frame) is
timed on the same inputs as the baseline when torch is installed, and reported as skipped
when it is not. Outputs: ``results.json`` (with the machine's CPU, cores, instruction
sets and package versions), ``results.md`` and three PNG plots.

The ceiling and the graphs' multiply-add counts need onnx and nncf (the ``calibrate``
extra); without them those tables are reported as skipped (:class:`~.grid.Skipped`).

This module runs the steps in order (:func:`run_bench`); the grid and its result types are
in :mod:`.grid`, the measurements in :mod:`.measure`, the scores in :mod:`.scoring`,
``results.md`` in :mod:`.report` and the plots in :mod:`.plots`.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from ..errors import IplapError
from .grid import ORIGINAL_REFS, STAGES, Accuracy, BenchConfig, Case, CaseResult, Skipped, fp32_bundle, grid_cases
from .measure import (fixed_inputs, has_calibrate_extra, has_torch, in_process, machine_info, measure_ceiling_run,
                      measure_round, merge_ceilings, pool_rounds, torch_baseline)
from .plots import plot
from .report import markdown
from .scoring import graph_gmac, graph_throughput, json_default, original_dict, result_dict, score, thread_scaling

log = logging.getLogger(__name__)


def run_bench(config: BenchConfig, show_progress: bool = True) -> dict:
    """Measure the grid, score it, and write results.json, results.md and the plots into
    ``config.out_dir``; the report (as results.json, with :class:`Skipped` where skipped)."""
    from ..runtime.bundle import Bundle

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise IplapError("iplap bench draws its plots with matplotlib: pip install 'iplap[bench]'") from None
    if not config.bundles:
        raise IplapError("give at least one --bundle")
    # Each bundle keeps the path it was given as, so that the recommended flags name it the same way.
    bundles = {str(path): Bundle.load(path) for path in config.bundles}
    config.out_dir.mkdir(parents=True, exist_ok=True)
    report = _BenchRun(config, bundles, show_progress).run()
    (config.out_dir / "results.json").write_text(json.dumps(report, indent=2, default=json_default) + "\n")
    (config.out_dir / "results.md").write_text(markdown(report))
    plot(report, config.out_dir)
    return report


class _BenchRun:
    """One ``iplap bench`` run: the grid's cases, what can be measured here, and the progress bar."""

    def __init__(self, config: BenchConfig, bundles: dict, show_progress: bool):
        from tqdm import tqdm

        self.config, self.bundles = config, bundles
        self.cases, self.original = grid_cases(config, bundles)
        self.measure_original = self.original is not None and self.original not in self.cases
        self.reference_bundle = fp32_bundle(bundles) or next(iter(bundles))
        self.torch_available = has_torch()
        self.macs_available, self.missing = has_calibrate_extra()
        self.ceiling_runs: list[dict] = []
        steps = (len(self.cases) * config.repeats + int(self.measure_original) + 2 * int(self.measures_ceiling)
                 + (len(config.refs) if self.measures_torch else 0))
        self.bar = tqdm(total=steps, desc="benchmark", unit="config", file=sys.stderr, disable=not show_progress)

    @property
    def measures_ceiling(self) -> bool:
        return self.config.ceiling and self.macs_available

    @property
    def measures_torch(self) -> bool:
        return self.config.torch_baseline and self.torch_available

    def run(self) -> dict:
        config = self.config
        if self.measures_ceiling:
            self._ceiling_run("before")
        gmac = graph_gmac(self.bundles[self.reference_bundle]) if self.macs_available else None
        with tempfile.TemporaryDirectory(prefix="iplap-bench-") as tmp:
            clip, speech = fixed_inputs(Path(tmp), config.clip_seconds, config.frames, config.warmup)
            results = self._rounds(Path(tmp), str(clip), str(speech))
            original = self._original(results, Path(tmp), str(clip), str(speech))
            baselines = self._torch_baselines(str(clip), str(speech))
            # Again after the grid: a ceiling measured while other work held a core would
            # understate the machine for the whole report.
            ceiling = self._ceiling_after()
            self.bar.close()
            score(results, original)
        self._compare_with_torch(results, baselines)
        if gmac is not None:
            for r in results:
                if r.error is None:
                    r.graphs = graph_throughput(r, gmac, {} if isinstance(ceiling, Skipped) else ceiling)
        return self._report(results, original, ceiling, gmac, baselines)

    def _measure(self, case: Case, clip: str, speech: str, outputs: str) -> dict:
        return in_process(measure_round, asdict(case), clip, speech, self.config.frames, self.config.warmup, outputs)

    def _rounds(self, tmp: Path, clip: str, speech: str) -> list[CaseResult]:
        """Every configuration once per round, each in a fresh process, so that load from other
        processes on the machine, which comes and goes, falls on all of them alike."""
        repeats = self.config.repeats
        rounds: dict[int, list[dict]] = {k: [] for k in range(len(self.cases))}
        outputs = {k: str(tmp / f"case{k}.npz") for k in range(len(self.cases))}
        for round_ in range(repeats):
            for k, case in enumerate(self.cases):
                self.bar.set_postfix_str(f"{case.label} (round {round_ + 1}/{repeats})")
                rounds[k].append(self._measure(case, clip, speech, outputs[k]))
                self.bar.update()
        return [pool_rounds(case, rounds[k], outputs[k]) for k, case in enumerate(self.cases)]

    def _original(self, results: list[CaseResult], tmp: Path, clip: str, speech: str) -> CaseResult | None:
        """The original configuration's result: from the grid, or rendered apart (once: only its
        faces are needed, and one round renders the same frames as the others' rounds)."""
        if not self.measure_original:
            return next((r for r in results if r.case == self.original), None)
        self.bar.set_postfix_str(f"original configuration {self.original.label}")
        path = str(tmp / "original.npz")
        result = pool_rounds(self.original, [self._measure(self.original, clip, speech, path)], path)
        self.bar.update()
        return result

    def _torch_baselines(self, clip: str, speech: str) -> dict[int, dict]:
        if not self.measures_torch:
            return {}
        config = self.config
        checkpoint = str(config.renderer_checkpoint) if config.renderer_checkpoint else None
        baselines = {}
        for refs in config.refs:
            self.bar.set_postfix_str(f"torch original N={refs}")
            baselines[refs] = in_process(torch_baseline, self.reference_bundle, checkpoint, clip, speech, refs,
                                         max(config.threads), max(1, min(config.repeats, 2)))
            self.bar.update()
        return baselines

    def _ceiling_run(self, when: str) -> None:
        config = self.config
        self.bar.set_postfix_str(f"convolution ceiling, {when} the grid")
        self.ceiling_runs.append({"when": when, **in_process(measure_ceiling_run, config.backends, config.threads,
                                                             config.device, asdict(config.ceiling_config))})
        self.bar.update()

    def _ceiling_after(self) -> dict | Skipped:
        if not self.macs_available:
            return Skipped(f"needs {self.missing} (pip install 'iplap[calibrate]')")
        if not self.config.ceiling:
            return Skipped()
        self._ceiling_run("after")
        return merge_ceilings(self.ceiling_runs)

    def _compare_with_torch(self, results: list[CaseResult], baselines: dict[int, dict]) -> None:
        """torch runs at the most threads of the grid: compared with the configurations at as many."""
        for r in results:
            base = baselines.get(r.case.refs)
            if base and "error" not in base and r.case.threads == max(self.config.threads) \
                    and not math.isnan(r.seconds_per_frame):
                r.speedup_vs_torch = base["seconds_per_frame"] / r.seconds_per_frame

    def _report(self, results: list[CaseResult], original: CaseResult | None, ceiling: dict | Skipped,
                gmac: dict | None, baselines: dict[int, dict]) -> dict:
        from .recommend import recommend

        config = self.config
        result_dicts = [result_dict(r) for r in results]
        return {
            "command": config.command,
            "machine": machine_info(),
            "config": {k: (list(map(str, v)) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
                       for k, v in asdict(config).items()},
            "original": original_dict(original, self.measure_original) if original else Skipped("no fp32 bundle"),
            "ceiling": ceiling,
            "graph_gmac": gmac if gmac is not None else Skipped(f"needs {self.missing}"),
            "results": result_dicts,
            "thread_scaling": thread_scaling(result_dicts),
            "torch_baseline": ({str(n): b for n, b in baselines.items()} if baselines
                               else Skipped("torch is not installed") if not self.torch_available else Skipped()),
            "recommendation": recommend(result_dicts, config.budget, config.min_psnr),
        }


# The names this module has always offered (they now live in grid, measure and scoring).
__all__ = ["Accuracy", "BenchConfig", "Case", "CaseResult", "ORIGINAL_REFS", "STAGES", "Skipped", "graph_throughput",
           "markdown", "merge_ceilings", "plot", "pool_rounds", "run_bench", "thread_scaling"]
