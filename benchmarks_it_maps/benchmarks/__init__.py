"""Readout, regression (PLS), metric and ceilings, and the Arcaro2020 benchmarks built on them."""
