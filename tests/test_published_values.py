"""Values printed in published tutorials, reproduced through the public API.

Each value is checked on both backends: the compiled kernels and the numpy
reference.

* ``init_test`` of hanbingtao's "零基础入门深度学习(4) - 卷积神经网络"
  (https://www.zybuluo.com/hanbingtao/note/485480), also reposted with
  huxiaoman7's PaddlePaddle examples: a 3x5x5 input, two 3x3x3 filters
  (biases 1 and 0), zero padding 1, stride 2, identity activation; the
  printed forward output, and the printed filters and biases after one SGD
  step (learning rate 0.001) with the tutorial's ``b`` as the output
  gradient.
* The answer to "Back-propagation in CNN" on Data Science Stack Exchange
  (https://datascience.stackexchange.com/questions/27506/back-propagation-in-cnn):
  the 2x2 kernel gradient of a stride-1 convolution from a 5x5 input ``o``
  and a 4x4 delta map ``d``.
"""

import numpy as np
import pytest

import cnnext
from cnnext import functional as F


@pytest.fixture(params=["numpy", "cython"])
def backend(request):
    with cnnext.use_backend(request.param):
        yield request.param


# -- hanbingtao, init_test -------------------------------------------------

INIT_TEST_A = np.array(
    [[[0, 1, 1, 0, 2],
      [2, 2, 2, 2, 1],
      [1, 0, 0, 2, 0],
      [0, 1, 1, 0, 0],
      [1, 2, 0, 0, 2]],
     [[1, 0, 2, 2, 0],
      [0, 0, 0, 2, 0],
      [1, 2, 1, 2, 1],
      [1, 0, 0, 0, 0],
      [1, 2, 1, 1, 1]],
     [[2, 1, 2, 0, 0],
      [1, 0, 0, 1, 0],
      [0, 2, 1, 0, 1],
      [0, 1, 2, 2, 2],
      [2, 1, 0, 0, 1]]], dtype=np.float64)

INIT_TEST_B = np.array(
    [[[0, 1, 1],
      [2, 2, 2],
      [1, 0, 0]],
     [[1, 0, 2],
      [0, 0, 0],
      [1, 2, 1]]], dtype=np.float64)

INIT_TEST_W = np.array(
    [[[[-1, 1, 0],
       [0, 1, 0],
       [0, 1, 1]],
      [[-1, -1, 0],
       [0, 0, 0],
       [0, -1, 0]],
      [[0, 0, -1],
       [0, 1, 0],
       [1, -1, -1]]],
     [[[1, 1, -1],
       [-1, -1, 1],
       [0, -1, 1]],
      [[0, 1, 0],
       [-1, 0, -1],
       [-1, 1, 0]],
      [[-1, 0, 0],
       [-1, 0, 1],
       [-1, 0, 0]]]], dtype=np.float64)

INIT_TEST_BIAS = np.array([1.0, 0.0])

# "前向传播结果" (forward result)
INIT_TEST_FORWARD = np.array(
    [[[6., 7., 5.],
      [3., -1., -1.],
      [2., -1., 4.]],
     [[2., -5., -8.],
      [1., -4., -4.],
      [0., -5., -5.]]])

# "反向传播后更新得到的filter1/filter2" (filters after the update)
INIT_TEST_FILTER1 = np.array(
    [[[-1.008, 0.99, -0.009],
      [-0.005, 0.994, -0.006],
      [-0.006, 0.995, 0.996]],
     [[-1.004, -1.001, -0.004],
      [-0.01, -0.009, -0.012],
      [-0.002, -1.002, -0.002]],
     [[-0.002, -0.002, -1.003],
      [-0.005, 0.992, -0.005],
      [0.993, -1.008, -1.007]]])
INIT_TEST_FILTER2 = np.array(
    [[[9.98000000e-01, 9.98000000e-01, -1.00100000e+00],
      [-1.00400000e+00, -1.00700000e+00, 9.97000000e-01],
      [-4.00000000e-03, -1.00400000e+00, 9.98000000e-01]],
     [[0.00000000e+00, 9.99000000e-01, 0.00000000e+00],
      [-1.00900000e+00, -5.00000000e-03, -1.00400000e+00],
      [-1.00400000e+00, 1.00000000e+00, 0.00000000e+00]],
     [[-1.00400000e+00, -6.00000000e-03, -5.00000000e-03],
      [-1.00200000e+00, -5.00000000e-03, 9.98000000e-01],
      [-1.00200000e+00, -1.00000000e-03, 0.00000000e+00]]])
INIT_TEST_BIAS1 = 0.99099999999999999
INIT_TEST_BIAS2 = -0.0070000000000000001


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_init_test_conv_forward_stride2_pad1(backend, dtype):
    y = F.conv2d(INIT_TEST_A.astype(dtype), INIT_TEST_W.astype(dtype),
                 INIT_TEST_BIAS.astype(dtype), stride=2, padding=1)
    assert y.shape == (2, 3, 3) and y.dtype == dtype
    np.testing.assert_array_equal(y, INIT_TEST_FORWARD)


def test_init_test_sgd_step_after_backward(backend):
    lr = 0.001
    gx, gw, gb = F.conv2d_backward(INIT_TEST_B, INIT_TEST_A, INIT_TEST_W, stride=2,
                                   padding=1)
    assert gx.shape == INIT_TEST_A.shape
    new_w = INIT_TEST_W - lr * gw
    new_b = INIT_TEST_BIAS - lr * gb
    np.testing.assert_allclose(new_w[0], INIT_TEST_FILTER1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(new_w[1], INIT_TEST_FILTER2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(new_b, [INIT_TEST_BIAS1, INIT_TEST_BIAS2], rtol=0,
                               atol=1e-12)


# -- "Back-propagation in CNN" (Data Science Stack Exchange) ----------------

QA_O = np.array([(0.51, 0.9, 0.88, 0.84, 0.05),
                    (0.4, 0.62, 0.22, 0.59, 0.1),
                    (0.11, 0.2, 0.74, 0.33, 0.14),
                    (0.47, 0.01, 0.85, 0.7, 0.09),
                    (0.76, 0.19, 0.72, 0.17, 0.57)])
QA_D = np.array([(0, 0, 0.0686, 0),
                    (0, 0.0364, 0, 0),
                    (0, 0.0467, 0, 0),
                    (0, 0, 0, -0.0681)])
QA_GRADIENT = np.array([[0.044606, 0.094061], [0.011262, 0.068288]])


def test_back_propagation_in_cnn_kernel_gradient_2x2_stride1(backend):
    x = QA_O[None, None]                       # (1, 1, 5, 5)
    g = QA_D[None, None]                       # (1, 1, 4, 4)
    w = np.random.default_rng(0).standard_normal((1, 1, 2, 2))
    _, gw, gb = F.conv2d_backward(g, x, w, stride=1)
    assert gw.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(gw[0, 0], QA_GRADIENT, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gb, [QA_D.sum()], rtol=0, atol=1e-12)
