"""The bundle manifest: what a device and an edge need to know about every split.

Versioned (``schema_version``) and strict: unknown keys are rejected, so a typo or a
manifest from a newer converter fails loudly instead of being half-understood. The
device reads the same file without pydantic (``device_app/learner/profile.py``), so
keep the two in step when the schema changes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Preprocessing(Strict):
    size: tuple[int, int] = Field(description="input height and width the frame is resized to")
    scale: float = Field(1.0 / 255.0, description="pixel values are multiplied by this after resizing")
    channel_order: Literal["RGB", "BGR"] = Field("RGB", description="channel order the model expects")


class Decoding(Strict):
    kind: Literal["none", "yolov2-region", "yolo"] = Field("none", description="how raw outputs become detections")
    anchors: list[tuple[float, float]] = Field(default_factory=list,
                                               description="anchor (w, h): grid cells for yolov2-region, pixels for yolo")
    masks: list[list[int]] = Field(default_factory=list, description="yolo: anchor indices used by each output")
    classes: int = Field(0, ge=0, description="number of classes")
    labels: list[str] = Field(default_factory=list, description="class names, index = class id")


class TensorInfo(Strict):
    name: str = Field(description="tensor (layer) name")
    shape: list[int] = Field(description="shape with batch 1")
    dtype: str = Field("float32", description="numpy dtype name")


class ModelInfo(Strict):
    name: str = Field(description="model name")
    input: TensorInfo = Field(description="the image input, NHWC")
    outputs: list[TensorInfo] = Field(description="the model's outputs, in order")
    preprocessing: Preprocessing
    decoding: Decoding
    content_hash: str = Field(description="sha256 of the architecture and weights; the edge refuses other bundles")


class FileRef(Strict):
    path: str = Field(description="path relative to the bundle folder")
    sha256: str = Field(description="sha256 of the file's bytes")


class Split(Strict):
    index: int = Field(ge=0, description="0 = send the input, last = everything on the device")
    cut: str | None = Field(description="layer whose output is sent; None for device-only")
    head: FileRef | None = Field(description="TFLite model computing the cut tensor from the input; None for index 0")
    tail: FileRef | None = Field(description="Keras model the edge builds the rest from, starting at ``cut``; "
                                             "None for device-only")
    cut_shape: list[int] = Field(description="shape of the tensor sent (batch 1); [] for device-only")
    cut_dtype: str = Field("float32", description="dtype of the tensor sent")
    transfer_bytes: int = Field(ge=0, description="raw payload bytes of the tensor sent (0 for device-only)")
    codec_bytes: dict[str, int] = Field(description="payload bytes of the tensor sent with each cut-tensor codec "
                                                    "(float32 = transfer_bytes, float16, int8)")
    context: list[float] = Field(min_length=7, max_length=7,
                                 description="back-end context: conv MACs, conv layers, fc MACs, fc layers, "
                                             "activation MACs, activation layers, transfer bits")
    front_macs: int = Field(ge=0, description="MACs the device computes for this split (all layer kinds)")


class Manifest(Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    model: ModelInfo
    whole_model: FileRef = Field(description="the whole model as one TFLite file, for pure on-device runs")
    splits: list[Split]
    converter: dict[str, str] = Field(default_factory=dict, description="versions of the tools that made the bundle")
