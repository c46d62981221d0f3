"""Benchmarks: accuracy against speed, per backend, precision and number of references.

``iplap bench`` (:func:`.bench.run_bench`) is split by job:

* :mod:`.grid` - what is measured: :class:`~.grid.BenchConfig`, the configurations (:class:`~.grid.Case`);
* :mod:`.measure` - the fixed inputs and one configuration's run, each in a fresh process;
* :mod:`.scoring` - the renders scored against fp32 and the original configuration, MACs, results;
* :mod:`.report` - results.md; :mod:`.plots` - the PNG plots, one function per plot;
* :mod:`.bench` - the steps together (``run_bench``);
* :mod:`.ceiling` - the machine's convolution ceiling; :mod:`.recommend` - the setting to use;
* :mod:`.timing` - timers and memory;
* :mod:`.live` - ``iplap bench --live``: live streams against the ceiling (``run_live_bench``),
  split the same way: :mod:`.live_grid` (its config and cases), :mod:`.live_measure` (one
  round, the soak), :mod:`.live_scoring` (rounds pooled, accuracy, the live choice) and
  :mod:`.live_report` (live.md);
* :mod:`.cli` - the ``iplap bench`` subcommand.

The other ``bench_*`` and ``profile_graph`` modules are stand-alone scripts (``python -m``).
"""

from ..limits import DEFAULT_REFS

#: The numbers of references ``iplap bench`` measures by default.
BENCH_REFS = (5, 10, DEFAULT_REFS)
#: The numbers of references ``iplap bench --live`` measures by default.
LIVE_REFS = (1, 5, 10)
#: The avatar kinds ``iplap bench --live`` measures: the sample photo, and a face video made from it.
AVATARS = ("photo", "video")
