"""The convolution-basics worked examples, reproduced exactly by cnnkit.core.models.conv."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.models.conv import HORIZONTAL_EDGE, VERTICAL_EDGE, convolve, output_size, pool

IMAGE_6X6 = np.array([[3, 0, 1, 2, 7, 4],
                      [1, 5, 8, 9, 3, 1],
                      [2, 7, 2, 5, 1, 3],
                      [0, 1, 3, 1, 7, 8],
                      [4, 2, 1, 6, 2, 8],
                      [2, 4, 5, 2, 3, 9]])
POOL_4X4 = np.array([[1, 3, 2, 1],
                     [2, 9, 1, 1],
                     [1, 3, 2, 3],
                     [5, 6, 1, 2]])


def test_vertical_edge_filter_on_the_6x6_image():
    result = convolve(IMAGE_6X6, VERTICAL_EDGE)
    np.testing.assert_array_equal(result, [[-5, -4, 0, 8],
                                           [-10, -2, 2, 3],
                                           [0, -2, -4, -7],
                                           [-3, -2, -3, -16]])


def test_vertical_edge_is_found_between_bright_and_dark_halves():
    half = np.array([[10, 10, 10, 0, 0, 0]] * 6)
    np.testing.assert_array_equal(convolve(half, VERTICAL_EDGE), [[0, 30, 30, 0]] * 4)
    np.testing.assert_array_equal(convolve(half, HORIZONTAL_EDGE), np.zeros((4, 4)))
    np.testing.assert_array_equal(convolve(half[:, ::-1], VERTICAL_EDGE), [[0, -30, -30, 0]] * 4)


def test_max_and_average_pooling_of_the_4x4_matrix():
    np.testing.assert_array_equal(pool(POOL_4X4, 2, stride=2, mode="max"), [[9, 2], [6, 3]])
    np.testing.assert_array_equal(pool(POOL_4X4, 2, stride=2, mode="avg"), [[3.75, 1.25], [3.75, 2]])


def test_output_size_formula_worked_cases():
    assert output_size(6, 3) == 4  # 6x6 * 3x3 -> 4x4
    assert output_size(6, 3, padding=1) == 6  # "same" padding p = (f-1)/2
    assert output_size(7, 3, stride=2) == 3  # 7x7 * 3x3, stride 2 -> 3x3
    assert output_size(227, 11, stride=4) == 55  # AlexNet conv1
    assert output_size(55, 3, stride=2) == 27  # overlapping pooling
    assert output_size(5, 5, stride=3) == 1


@pytest.mark.parametrize("n,f,s,p,ceil", [(n, f, s, p, c) for n in (5, 14, 32, 55, 112) for f in (1, 3, 5, 7)
                                           for s in (1, 2, 3) for p in (0, 1) for c in (False, True)
                                           if p <= f // 2 and f <= n])
def test_output_size_matches_torch(n, f, s, p, ceil):
    x = torch.zeros(1, 1, n, n)
    assert output_size(n, f, stride=s, padding=p, ceil_mode=ceil) == \
        F.max_pool2d(x, f, s, p, ceil_mode=ceil).shape[-1]
    if not ceil:
        conv = F.conv2d(x, torch.zeros(1, 1, f, f), stride=s, padding=p)
        assert output_size(n, f, stride=s, padding=p) == conv.shape[-1]


def test_convolve_volume_stride_padding_matches_torch():
    rng = np.random.default_rng(0)
    image, kernel = rng.normal(size=(7, 7, 3)), rng.normal(size=(3, 3, 3))
    ours = convolve(image, kernel, stride=2, padding=1)
    theirs = F.conv2d(torch.tensor(image).permute(2, 0, 1)[None], torch.tensor(kernel).permute(2, 0, 1)[None],
                      stride=2, padding=1)[0, 0].numpy()
    assert ours.shape == (4, 4)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(CnnkitError, match="does not fit"):
        convolve(np.zeros((2, 2)), VERTICAL_EDGE)
    with pytest.raises(CnnkitError, match="does not fit"):
        convolve(np.zeros((6, 6, 3)), VERTICAL_EDGE)
    with pytest.raises(CnnkitError, match="'max' or 'avg'"):
        pool(POOL_4X4, mode="median")
