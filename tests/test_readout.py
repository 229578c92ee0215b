"""Grid sampling of feature maps (PAPER_NOTES 8.6): hand-computed bilinear values and orientation."""
import numpy as np
import pytest

from benchmarks_it_maps.benchmarks.readout import grid_coordinates, sample_feature_maps


def test_grid_coordinates_span_the_image_edge_to_edge():
    np.testing.assert_allclose(grid_coordinates(5), [0, 0.25, 0.5, 0.75, 1])
    with pytest.raises(ValueError):
        grid_coordinates(1)


def test_bilinear_hand_values_on_a_2x2_map():
    # cell centres at 0.25 and 0.75; grid points at 0, 0.5, 1 -> border cell, midpoint average, border cell
    features = np.array([[[[1.0, 3.0], [5.0, 7.0]]]])  # [N=1, C=1, h=2, w=2]
    out = sample_feature_maps(features, 3)
    assert out.shape == (1, 3, 3, 1)
    np.testing.assert_allclose(out[0, :, :, 0], [[1, 2, 3], [3, 4, 5], [5, 6, 7]])


def test_orientation_rows_are_image_rows_and_channels_last():
    features = np.zeros((2, 3, 8, 8))
    features[1, 2, 0, -1] = 1.0  # top-right cell of image 1, channel 2
    out = sample_feature_maps(features, 9)
    assert out.shape == (2, 9, 9, 3)
    peak = np.unravel_index(np.argmax(out[1, :, :, 2]), (9, 9))
    assert peak == (0, 8)
    assert out[0].max() == 0.0


def test_wrong_rank_is_an_error():
    with pytest.raises(ValueError, match=r"\[N, C, h, w\]"):
        sample_feature_maps(np.zeros((3, 8, 8)), 5)


def test_span_maps_the_grid_onto_the_image_part_of_a_surround_canvas():
    # a 4-cell ramp whose value is each cell centre's canvas coordinate (0.125 ... 0.875): sampling is linear there,
    # so the grid points of an image spanning (0.25, 0.75) of the canvas read exactly 0.25, 0.5, 0.75
    centres = (np.arange(4) + 0.5) / 4
    features = np.broadcast_to(centres, (1, 1, 4, 4)).copy()  # value = column coordinate
    out = sample_feature_maps(features, 3, span=(0.25, 0.75))
    np.testing.assert_allclose(out[0, 0, :, 0], [0.25, 0.5, 0.75])
    np.testing.assert_allclose(out[0, :, 0, 0], [0.25] * 3)  # rows follow the same span (here constant)
    rows = sample_feature_maps(np.ascontiguousarray(features.transpose(0, 1, 3, 2)), 3, span=(0.25, 0.75))
    np.testing.assert_allclose(rows[0, :, 0, 0], [0.25, 0.5, 0.75])
    np.testing.assert_allclose(sample_feature_maps(features, 3)[0, 0, :, 0], [0.125, 0.5, 0.875])  # border-clamped
    with pytest.raises(ValueError, match="span"):
        sample_feature_maps(features, 3, span=(0.6, 0.4))
