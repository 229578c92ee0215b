"""The neural harmonizer (Fel et al. 2022) in PyTorch: align a network's gradient saliency with human ClickMe maps
while it learns ImageNet. See ``loss`` (the loss), ``clickme`` / ``tfrecord`` (TensorFlow-free ClickMe reader),
``data`` (mixed batches), ``train`` (training loop, ``brainscore harmonize train``), ``evaluate`` (ClickMe
alignment, ``brainscore harmonize evaluate``) and ``checkpoint`` (the final checkpoint folder)."""
from .loss import (decay_parameters, harmonizer_loss, pyramid, pyramidal_mse, saliency, same_padding,
                   standardize_cut)

__all__ = ["decay_parameters", "harmonizer_loss", "pyramid", "pyramidal_mse", "saliency", "same_padding",
           "standardize_cut"]
