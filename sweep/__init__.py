"""Benchmark sweeps over `dml_core` experiments: Ray Tune + Optuna + MLflow.

The map of this package (each file's job, what it writes and reads, and the flow of one sweep in
six steps) is docs/ARCHITECTURE.md, section `sweep`: the one file map, kept there.
"""
