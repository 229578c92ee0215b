"""ResNet50 v1 as Keras built it (the 'caffe' ResNet of ``keras_applications.resnet50`` and TF2's ``ResNet50``).

Differences from torchvision's ResNet50 (v1.5), all of which change the outputs:

* the stride-2 of the first block of stages 3-5 sits on the **first 1x1 conv** (``res3a_branch2a``) and on the
  shortcut, not on the 3x3 conv (``stride_in_1x1=True``; False gives the v1.5 placement, used only as a negative
  control in the tests);
* every conv has a **bias**;
* BatchNorm epsilon comes from the file (1e-3 in the caffe-named version, 1.001e-5 in TF2's);
* stem: ZeroPadding2D(3) + 7x7/2 valid conv == ``padding=3``; ``pool1_pad`` ZeroPadding2D(1) + MaxPool 3/2 valid
  after the ReLU == ``MaxPool2d(3, 2, padding=1)`` (``maxpool_padding=0`` for keras_applications <= 1.0.5 files).

Module names follow torchvision (``conv1``, ``bn1``, ``layer1``..``layer4``, ``fc``) and every Keras layer that
Brain-Score users pick as an IT layer has its own module, so hooks see the same tensors as the Keras layer:

=========================  =================================  ==================================
torch module               caffe Keras name                   TF2 Keras name
=========================  =================================  ==================================
``layer4.2.conv2``         ``res5c_branch2b``                 ``conv5_block3_2_conv``
``layer4.2.relu1``         ``activation_46`` (after bn5c_2a)  ``conv5_block3_1_relu``
``layer4.2.add``           ``add_15``                         ``conv5_block3_add``
``layer4.2`` / ``.relu3``  ``activation_48``                  ``conv5_block3_out``
``global_pool``            ``avg_pool``                       ``avg_pool``
``fc``                     ``fc1000``                         ``predictions``
=========================  =================================  ==================================
"""
from __future__ import annotations

import torch
from torch import nn

LAYERS = (3, 4, 6, 3)
WIDTHS = (64, 128, 256, 512)
EXPANSION = 4


class Add(nn.Module):
    """Element-wise sum as a module, so the residual sum (Keras ``add_N``) can be hooked."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck with biased convs; stride on the 1x1 (v1) or on the 3x3 (v1.5)."""

    def __init__(self, in_ch: int, width: int, stride: int, eps: float, stride_in_1x1: bool = True):
        super().__init__()
        out_ch = width * EXPANSION
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_ch, width, 1, stride=s1, bias=True)
        self.bn1 = nn.BatchNorm2d(width, eps=eps)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, stride=s3, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(width, eps=eps)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=True)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=eps)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=True),
                                            nn.BatchNorm2d(out_ch, eps=eps))
        self.add = Add()
        self.relu3 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.relu2(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu3(self.add(y, shortcut))


class CaffeResNet50(nn.Module):
    """Keras ResNet50 v1 (see module docstring); input = what the Keras model received, NCHW."""

    def __init__(self, num_classes: int = 1000, eps: float = 1e-3, stride_in_1x1: bool = True,
                 maxpool_padding: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=True)
        self.bn1 = nn.BatchNorm2d(64, eps=eps)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=maxpool_padding)
        in_ch = 64
        for i, (n, width) in enumerate(zip(LAYERS, WIDTHS)):
            blocks = []
            for j in range(n):
                stride = 2 if (j == 0 and i > 0) else 1
                blocks.append(Bottleneck(in_ch, width, stride, eps, stride_in_1x1))
                in_ch = width * EXPANSION
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(in_ch, num_classes)
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.global_pool(self.forward_features(x))))


def caffe_resnet50(num_classes: int = 1000, eps: float = 1e-3, stride_in_1x1: bool = True,
                   maxpool_padding: int = 1) -> CaffeResNet50:
    """Build the Keras-style ResNet50 v1 (random weights, eval mode)."""
    return CaffeResNet50(num_classes, eps, stride_in_1x1, maxpool_padding).eval()
