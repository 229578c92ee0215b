"""Tests of the accuracy/IT trade-off metric plugin."""
import importlib

import brainscore_vision

IDENTIFIER = 'accuracy_it_tradeoff'
PLUGIN = 'brainscore_vision.metrics.accuracy_it_tradeoff'


def test_registration():
    importlib.import_module(PLUGIN)
    assert IDENTIFIER in brainscore_vision.metric_registry


def test_load_metric():
    from benchmarks_it_maps.analysis.tradeoff import TradeoffMetric
    assert isinstance(brainscore_vision.load_metric(IDENTIFIER), TradeoffMetric)
