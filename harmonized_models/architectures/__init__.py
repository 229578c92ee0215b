"""Torch architectures that timm does not provide (e.g. the Keras-style caffe ResNet50 v1)."""
from .caffe_resnet50 import CaffeResNet50, caffe_resnet50

__all__ = ["CaffeResNet50", "caffe_resnet50"]
