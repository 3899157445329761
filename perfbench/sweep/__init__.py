"""Sweeps: measure one workload over many settings and analyse the throughput landscape.

Why a sweep subsystem at all: throughput landscapes of LLM inference are irregular, with several
distinct peaks, and the best setting moves when the hardware changes. A sweep turns "which batch
size / compile mode / thread count is fastest here?" into one command whose every trial is a
normal, stored run.

Modules (torch-free at import, so `perfbench sweep list` starts fast):

* `spec`      the YAML sweep spec: validation, parameter paths, the grid, trial identity;
* `db`        the sweep's own tables (`sweeps`, `sweep_trials`) in the results store's SQLite file;
* `search`    the grid, random and bayes (optuna TPE) samplers;
* `executors` where trials run: a local forked subprocess per trial, or a Ray cluster;
* `trial`     the code a trial process runs (also `python -m perfbench.sweep.trial`);
* `engine`    run and resume a sweep;
* `landscape` best, default, gain, peaks, importance and cross-hardware comparison;
* `plots`     static heatmaps/contours/parallel coordinates (matplotlib) and plotly figures.
"""
