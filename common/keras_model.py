"""The Keras side of the bundle contract: the layers a bundle's edge model may use beyond Keras'
own (registered on import, so that loading finds them), loading such a model, and a split's
tail. Needs Keras: the edge and the converter import it, the device never does.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers as kl

from .errors import ConfigurationError
from .model_files import model_file_problem


class ModelError(ConfigurationError):
    """A model that cannot be loaded or split, with the reason."""


@keras.saving.register_keras_serializable(package="ans")
class ChannelGroup(kl.Layer):
    """Darknet's grouped route: channel group ``group_id`` of ``groups`` equal groups."""

    def __init__(self, groups: int, group_id: int, **kwargs):
        super().__init__(**kwargs)
        self.groups, self.group_id = groups, group_id

    def call(self, x):
        size = x.shape[-1] // self.groups
        return x[..., self.group_id * size:(self.group_id + 1) * size]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // self.groups)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "group_id": self.group_id}


def load_keras_model(path: str | Path):
    """Load a ``.keras`` or ``.h5`` model (a user's, or a bundle's edge model), with a clear error when it
    cannot be. Only the layers registered here may appear beyond Keras' own (``safe_mode``)."""
    path = Path(path)
    problem = model_file_problem(path)
    if problem:
        raise ModelError(problem)
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad file; name the file and the cause
        raise ModelError(f"{path}: cannot load the Keras model: {exc}") from None


def tail_model(model: keras.Model, cut: str) -> keras.Model:
    """What the edge runs for a split: from ``cut``'s output to the model's outputs (weights
    shared with ``model``). Cutting at the input is the whole model."""
    if cut == model.input._keras_history.operation.name:
        return model
    return keras.Model(model.get_layer(cut).output, model.outputs, name=f"tail_{cut}")
