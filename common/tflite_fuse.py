"""Fusing consecutive TFLite segments into one model, on the device, without TensorFlow.

A bundle stores the model once, as segments between cut points; split p's head is segments 1..p.
Run one after another, each boundary costs an interpreter call and two copies of the cut tensor
(tens of microseconds each, 10-35% of a small head). The split the learner settles on is better
run as one model: this joins the segments' graphs (the flatbuffer schema that LiteRT ships, and
``flatbuffers``), each segment's inputs becoming the tensors of those names that segments before it
compute. The weights are the segments' own bytes; nothing is computed differently.
"""

from __future__ import annotations

import numpy as np

#: Alignment of every weight buffer in the fused model (what the TFLite converter guarantees).
BUFFER_ALIGNMENT = 16


class FuseError(ValueError):
    """The segments cannot be joined (not one subgraph each, or they do not chain)."""


def _schema():
    from ai_edge_litert import schema_py_generated as schema  # tflite-runtime does not ship the schema

    return schema


def fuse_segments(models: list[bytes], reads: list[list[str]], writes: list[list[str]], wanted: list[str]) -> bytes:
    """One TFLite model computing ``models`` in turn. Tensors pass between them by name: ``reads[k]``
    names model k's inputs and ``writes[k]`` its outputs, in the interpreter's order; the fused model
    reads the first model's input and computes ``wanted``, in that order."""
    if not models:
        raise FuseError("nothing to fuse")
    import flatbuffers

    schema = _schema()

    class AlignedBuffer(schema.BufferT):
        """A weight buffer packed at BUFFER_ALIGNMENT (flatbuffers' numpy vectors align to the element)."""

        def Pack(self, builder):
            data = None
            if self.data is not None:
                raw = np.asarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(raw), BUFFER_ALIGNMENT)
                builder.head -= len(raw)
                builder.Bytes[builder.head:builder.head + len(raw)] = raw
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            return schema.BufferEnd(builder)

    fused = schema.ModelT()
    fused.version, fused.description = 3, "fused segments"
    fused.operatorCodes, fused.buffers = [], [AlignedBuffer()]  # buffer 0: the empty sentinel
    graph = schema.SubGraphT()
    graph.tensors, graph.operators, graph.name = [], [], "fused"
    codes: dict[tuple, int] = {}
    known: dict[str, int] = {}  # tensor name -> its index in the fused graph
    links = set()  # every tensor one segment computes and a later one reads
    for k, data in enumerate(models):
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
        if not model.subgraphs or len(model.subgraphs) != 1:
            raise FuseError(f"segment {k + 1}: {len(model.subgraphs or [])} subgraphs, one expected")
        sub = model.subgraphs[0]
        if len(sub.inputs) != len(reads[k]) or len(sub.outputs) != len(writes[k]):
            raise FuseError(f"segment {k + 1}: {len(sub.inputs)} inputs and {len(sub.outputs)} outputs, the "
                            f"manifest names {len(reads[k])} and {len(writes[k])}")
        if k == 0 and len(sub.inputs) != 1:
            raise FuseError(f"segment 1: {len(sub.inputs)} inputs, one expected (the image)")
        reading = {int(t): name for t, name in zip(sub.inputs, reads[k])}
        buffers = {0: 0}
        for i, buffer in enumerate(model.buffers or []):
            if i and buffer is not None:
                if buffer.offset > 1:  # weights stored outside the flatbuffer (models over 2 GB)
                    raise FuseError(f"segment {k + 1}: weights outside the flatbuffer are not supported")
                buffers[i] = len(fused.buffers)
                fused.buffers.append(AlignedBuffer(data=buffer.data))
        tensors = {}
        for i, tensor in enumerate(sub.tensors):
            if i in reading and k > 0:
                if reading[i] not in known:
                    raise FuseError(f"segment {k + 1} reads {reading[i]}, which no segment before it computes")
                before = graph.tensors[known[reading[i]]]
                if list(before.shape) != list(tensor.shape) or before.type != tensor.type:
                    raise FuseError(f"segment {k + 1} reads {list(tensor.shape)}, the one before computes "
                                    f"{list(before.shape)}: they do not chain")
                tensors[i] = known[reading[i]]
                links.add(tensors[i])
                continue
            tensor.buffer = buffers.get(tensor.buffer, 0)
            tensor.name = f"s{k + 1}/".encode() + (tensor.name or b"")
            tensors[i] = len(graph.tensors)
            graph.tensors.append(tensor)
        for op in sub.operators:
            code = model.operatorCodes[op.opcodeIndex]
            key = (code.deprecatedBuiltinCode, code.builtinCode, code.customCode, code.version)
            if key not in codes:
                codes[key] = len(fused.operatorCodes)
                fused.operatorCodes.append(code)
            op.opcodeIndex = codes[key]
            op.inputs = [tensors[t] if t >= 0 else t for t in op.inputs]
            op.outputs = [tensors[t] for t in op.outputs]
            if op.intermediates is not None:
                op.intermediates = [tensors[t] for t in op.intermediates]
            graph.operators.append(op)
        if k == 0:
            graph.inputs = [tensors[sub.inputs[0]]]
        known.update({name: tensors[t] for t, name in zip(sub.outputs, writes[k])})
    missing = [name for name in wanted if name not in known]
    if missing:
        raise FuseError(f"no segment computes {missing[0]}")
    graph.outputs = [known[name] for name in wanted]
    _requantize_across(graph, fused.operatorCodes, sorted(links), schema)
    fused.subgraphs = [graph]
    builder = flatbuffers.Builder(sum(len(d) for d in models) + (1 << 16))
    builder.Finish(fused.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _requantize_across(graph, codes: list, links: list[int], schema) -> None:
    """int8 segments meet in float (their ends DEQUANTIZE, their starts QUANTIZE again): inside one
    model that round trip is a requantization, int8 to int8 (one QUANTIZE op), or nothing at all where
    both sides have the same scale and zero point (many cuts: both were calibrated on the same values)."""
    def kind(op):
        code = codes[op.opcodeIndex]
        return max(code.builtinCode, code.deprecatedBuiltinCode)

    producer = {t: op for op in graph.operators for t in op.outputs}
    readers: dict[int, list] = {}
    for op in graph.operators:
        for t in op.inputs:
            readers.setdefault(t, []).append(op)
    dropped, renamed = set(), {}
    for link in links:
        back, ahead = producer.get(link), readers.get(link, [])
        if (back is None or kind(back) != schema.BuiltinOperator.DEQUANTIZE or not ahead
                or any(kind(op) != schema.BuiltinOperator.QUANTIZE for op in ahead) or link in graph.outputs):
            continue
        source = back.inputs[0]
        dropped.add(id(back))
        for quantize in ahead:  # every later segment that reads the tensor quantizes it again
            target = quantize.outputs[0]
            a, b = graph.tensors[source].quantization, graph.tensors[target].quantization
            same = (graph.tensors[source].type == graph.tensors[target].type and a is not None and b is not None
                    and len(a.scale) == len(b.scale) == 1 and list(a.zeroPoint) == list(b.zeroPoint)
                    and float(a.scale[0]) == float(b.scale[0]))  # exactly: ops like MAX_POOL_2D want that
            if same:  # the int8 tensor goes straight on
                dropped.add(id(quantize))
                renamed[target] = source
            else:
                quantize.inputs = [source]
    graph.operators = [op for op in graph.operators if id(op) not in dropped]
    for op in graph.operators:
        op.inputs = [renamed.get(t, t) for t in op.inputs]
    graph.outputs = [renamed.get(t, t) for t in graph.outputs]
