"""ONNX detectors shaped like the ones people export, built with onnx.helper and seeded weights (nothing
is downloaded): a YOLOv8-style model (SiLU as Sigmoid x Mul, batch norm folded into the convolutions,
C2f blocks with Split/Concat, SPPF, a Resize + Concat FPN/PAN neck, a DFL head decoded in the graph),
a YOLOX-style one (decoupled heads, [1, N, 5 + C] with the grid decode left out) and an SSD-style one
(MobileNet depthwise blocks with ReLU6, two outputs: boxes and scores). Used by the tests and the
converter benchmark; the weights are random, so the models are right for conversion and timing, not
for detection.
"""

from __future__ import annotations

import numpy as np


class GraphBuilder:
    """Nodes and initializers of one ONNX graph, with names made up as they are added."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def _fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, value, prefix: str = "const") -> str:
        from onnx import numpy_helper

        name = self._fresh(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: int = 1, prefix: str | None = None, **attrs):
        from onnx import helper

        name = self._fresh(prefix or op.lower())
        outs = [f"{name}_out{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs[0] if outputs == 1 else outs

    def conv(self, x: str, cin: int, cout: int, k: int = 1, s: int = 1, act: str | None = "silu",
             groups: int = 1, prefix: str = "conv") -> str:
        """A convolution with its batch norm folded in (a bias), then the activation."""
        fan_in = cin // groups * k * k
        w = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), (cout, cin // groups, k, k)).astype(np.float32)
        b = self.rng.normal(0.0, 0.1, cout).astype(np.float32)
        p = k // 2
        y = self.node("Conv", [x, self.const(w, f"{prefix}_w"), self.const(b, f"{prefix}_b")], prefix=prefix,
                      kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p], group=groups)
        if act == "silu":
            return self.node("Mul", [y, self.node("Sigmoid", [y])])
        if act == "relu6":
            return self.node("Clip", [y, self.const(np.float32(0.0)), self.const(np.float32(6.0))])
        if act == "relu":
            return self.node("Relu", [y])
        return y

    def model(self, image: str, shape: list[int], outputs: dict[str, list[int]], name: str, opset: int = 17,
              metadata: dict[str, str] | None = None):
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            self.nodes, name, [helper.make_tensor_value_info(image, TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
            initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="ans-lab")
        model.ir_version = 8
        for key, value in (metadata or {}).items():
            model.metadata_props.add(key=key, value=value)
        return model


def _c2f(g: GraphBuilder, x: str, cin: int, cout: int, n: int, shortcut: bool) -> str:
    c = cout // 2
    y = g.conv(x, cin, 2 * c, prefix="c2f_cv1")
    parts = list(g.node("Split", [y, g.const(np.array([c, c], dtype=np.int64))], outputs=2, axis=1))
    for _ in range(n):
        h = g.conv(g.conv(parts[-1], c, c, 3, prefix="bottleneck"), c, c, 3, prefix="bottleneck")
        parts.append(g.node("Add", [parts[-1], h]) if shortcut else h)
    return g.conv(g.node("Concat", parts, axis=1), (2 + n) * c, cout, prefix="c2f_cv2")


def _sppf(g: GraphBuilder, x: str, cin: int, cout: int) -> str:
    c = cin // 2
    y = g.conv(x, cin, c, prefix="sppf_cv1")
    pools = [y]
    for _ in range(3):
        pools.append(g.node("MaxPool", [pools[-1]], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]))
    return g.conv(g.node("Concat", pools, axis=1), 4 * c, cout, prefix="sppf_cv2")


def _upsample(g: GraphBuilder, x: str) -> str:
    scales = g.const(np.array([1, 1, 2, 2], dtype=np.float32))
    return g.node("Resize", [x, "", scales], mode="nearest", coordinate_transformation_mode="asymmetric",
                  nearest_mode="floor")


def yolov8(size: int = 320, classes: int = 80, width: float = 0.25, depth: float = 0.34, seed: int = 0):
    """A YOLOv8-style detector (YOLOv8n at width 0.25, depth 0.34): output [1, 4 + classes, N], boxes as
    centre x, centre y, width, height in input pixels, class scores after a sigmoid."""
    g = GraphBuilder(seed)
    ch = [max(8, int(c * width)) for c in (64, 128, 256, 512, 1024)]
    reps = [max(1, round(n * depth)) for n in (3, 6, 6, 3)]
    x = g.conv("images", 3, ch[0], 3, 2)
    x = g.conv(x, ch[0], ch[1], 3, 2)
    x = _c2f(g, x, ch[1], ch[1], reps[0], True)
    x = g.conv(x, ch[1], ch[2], 3, 2)
    p3 = _c2f(g, x, ch[2], ch[2], reps[1], True)
    x = g.conv(p3, ch[2], ch[3], 3, 2)
    p4 = _c2f(g, x, ch[3], ch[3], reps[2], True)
    x = g.conv(p4, ch[3], ch[4], 3, 2)
    x = _c2f(g, x, ch[4], ch[4], reps[3], True)
    p5 = _sppf(g, x, ch[4], ch[4])
    n4 = _c2f(g, g.node("Concat", [_upsample(g, p5), p4], axis=1), ch[4] + ch[3], ch[3], reps[0], False)
    out3 = _c2f(g, g.node("Concat", [_upsample(g, n4), p3], axis=1), ch[3] + ch[2], ch[2], reps[0], False)
    out4 = _c2f(g, g.node("Concat", [g.conv(out3, ch[2], ch[2], 3, 2), n4], axis=1), ch[2] + ch[3], ch[3],
                reps[0], False)
    out5 = _c2f(g, g.node("Concat", [g.conv(out4, ch[3], ch[3], 3, 2), p5], axis=1), ch[3] + ch[4], ch[4],
                reps[0], False)
    reg = 16
    c2, c3 = max(16, ch[2] // 4, 4 * reg), max(ch[2], min(classes, 100))
    levels, anchors, strides = [], [], []
    for feature, cin, stride in ((out3, ch[2], 8), (out4, ch[3], 16), (out5, ch[4], 32)):
        box = g.conv(g.conv(g.conv(feature, cin, c2, 3), c2, c2, 3), c2, 4 * reg, act=None, prefix="box")
        cls = g.conv(g.conv(g.conv(feature, cin, c3, 3), c3, c3, 3), c3, classes, act=None, prefix="cls")
        cells = size // stride
        both = g.node("Concat", [box, cls], axis=1)
        levels.append(g.node("Reshape", [both, g.const(np.array([1, 4 * reg + classes, -1], dtype=np.int64))]))
        ys, xs = np.meshgrid(np.arange(cells) + 0.5, np.arange(cells) + 0.5, indexing="ij")
        anchors.append(np.stack([xs.ravel(), ys.ravel()]))
        strides.append(np.full(cells * cells, stride))
    n = sum(a.shape[1] for a in anchors)
    flat = g.node("Concat", levels, axis=2)
    box, cls = g.node("Split", [flat, g.const(np.array([4 * reg, classes], dtype=np.int64))], outputs=2, axis=1)
    # DFL: a softmax over 16 bins per side, then their expectation (a 1x1 convolution with weights 0..15).
    dist = g.node("Transpose", [g.node("Reshape", [box, g.const(np.array([1, 4, reg, n], dtype=np.int64))])],
                  perm=[0, 2, 1, 3])
    dist = g.node("Softmax", [dist], axis=1)
    bins = np.arange(reg, dtype=np.float32).reshape(1, reg, 1, 1)
    dist = g.node("Conv", [dist, g.const(bins, "dfl_w")], kernel_shape=[1, 1], prefix="dfl")
    dist = g.node("Reshape", [dist, g.const(np.array([1, 4, n], dtype=np.int64))])
    lt, rb = g.node("Split", [dist, g.const(np.array([2, 2], dtype=np.int64))], outputs=2, axis=1)
    grid = g.const(np.concatenate(anchors, axis=1)[None].astype(np.float32), "anchors")
    x1y1, x2y2 = g.node("Sub", [grid, lt]), g.node("Add", [grid, rb])
    centre = g.node("Div", [g.node("Add", [x1y1, x2y2]), g.const(np.float32(2.0))])
    wh = g.node("Sub", [x2y2, x1y1])
    boxes = g.node("Mul", [g.node("Concat", [centre, wh], axis=1),
                           g.const(np.concatenate(strides)[None, None].astype(np.float32), "strides")])
    out = g.node("Concat", [boxes, g.node("Sigmoid", [cls])], axis=1, prefix="output0")
    names = {k: f"class{k}" for k in range(classes)}
    return g.model("images", [1, 3, size, size], {out: [1, 4 + classes, n]}, "yolov8",
                   metadata={"names": str(names), "stride": "32", "task": "detect"})


def yolox(size: int = 416, classes: int = 80, width: float = 0.25, seed: int = 1):
    """A YOLOX-nano-style detector: depthwise CSP backbone, PAN neck, decoupled heads; output
    [1, N, 5 + classes] with the grid decode left out (raw offsets and log sizes), as exported by
    default."""
    g = GraphBuilder(seed)
    ch = [max(8, int(c * width)) for c in (64, 128, 256, 512, 1024)]

    def dw(x, cin, cout, s):
        return g.conv(g.conv(x, cin, cin, 3, s, groups=cin, prefix="dw"), cin, cout, 1, prefix="pw")

    x = g.conv("images", 3, ch[0], 3, 2)
    x = dw(x, ch[0], ch[1], 2)
    x = _c2f(g, x, ch[1], ch[1], 1, True)
    p3 = _c2f(g, dw(x, ch[1], ch[2], 2), ch[2], ch[2], 1, True)
    p4 = _c2f(g, dw(p3, ch[2], ch[3], 2), ch[3], ch[3], 1, True)
    p5 = _sppf(g, dw(p4, ch[3], ch[4], 2), ch[4], ch[4])
    n4 = _c2f(g, g.node("Concat", [_upsample(g, g.conv(p5, ch[4], ch[3])), p4], axis=1), 2 * ch[3], ch[3], 1, False)
    out3 = _c2f(g, g.node("Concat", [_upsample(g, g.conv(n4, ch[3], ch[2])), p3], axis=1), 2 * ch[2], ch[2], 1,
                False)
    out4 = _c2f(g, g.node("Concat", [dw(out3, ch[2], ch[2], 2), g.conv(n4, ch[3], ch[2])], axis=1), 2 * ch[2],
                ch[3], 1, False)
    out5 = _c2f(g, g.node("Concat", [dw(out4, ch[3], ch[3], 2), g.conv(p5, ch[4], ch[3])], axis=1), 2 * ch[3],
                ch[4], 1, False)
    hidden = ch[2]
    levels = []
    for feature, cin in ((out3, ch[2]), (out4, ch[3]), (out5, ch[4])):
        stem = g.conv(feature, cin, hidden, prefix="stem")
        cls = g.conv(dw(dw(stem, hidden, hidden, 1), hidden, hidden, 1), hidden, classes, act=None, prefix="cls")
        reg = dw(dw(stem, hidden, hidden, 1), hidden, hidden, 1)
        box = g.conv(reg, hidden, 4, act=None, prefix="reg")
        obj = g.conv(reg, hidden, 1, act=None, prefix="obj")
        level = g.node("Concat", [box, g.node("Sigmoid", [obj]), g.node("Sigmoid", [cls])], axis=1)
        levels.append(g.node("Reshape", [level, g.const(np.array([1, 5 + classes, -1], dtype=np.int64))]))
    n = sum((size // s) ** 2 for s in (8, 16, 32))
    out = g.node("Transpose", [g.node("Concat", levels, axis=2)], perm=[0, 2, 1], prefix="output")
    return g.model("images", [1, 3, size, size], {out: [1, n, 5 + classes]}, "yolox")


def ssd_mobilenet(size: int = 300, classes: int = 91, width: float = 0.5, seed: int = 2):
    """An SSD-MobileNet-style detector: depthwise-separable blocks with ReLU6, box and class heads on two
    feature maps; two outputs, boxes [1, N, 4] and class scores [1, N, classes] (softmax)."""
    g = GraphBuilder(seed)
    c = [max(8, int(k * width)) for k in (32, 64, 128, 256, 512, 1024)]

    def block(x, cin, cout, s):
        x = g.conv(x, cin, cin, 3, s, act="relu6", groups=cin, prefix="dw")
        return g.conv(x, cin, cout, 1, act="relu6", prefix="pw")

    x = g.conv("images", 3, c[0], 3, 2, act="relu6")
    x = block(x, c[0], c[1], 1)
    x = block(x, c[1], c[2], 2)
    x = block(x, c[2], c[2], 1)
    x = block(x, c[2], c[3], 2)
    x = block(x, c[3], c[3], 1)
    f1 = block(block(x, c[3], c[4], 2), c[4], c[4], 1)
    f2 = block(f1, c[4], c[5], 2)
    anchors = 3
    boxes, scores = [], []
    for feature, cin in ((f1, c[4]), (f2, c[5])):
        b = g.conv(feature, cin, anchors * 4, 1, act=None, prefix="box")
        s = g.conv(feature, cin, anchors * classes, 1, act=None, prefix="score")
        boxes.append(g.node("Reshape", [g.node("Transpose", [b], perm=[0, 2, 3, 1]),
                                        g.const(np.array([1, -1, 4], dtype=np.int64))]))
        scores.append(g.node("Reshape", [g.node("Transpose", [s], perm=[0, 2, 3, 1]),
                                         g.const(np.array([1, -1, classes], dtype=np.int64))]))
    n = sum(anchors * (-(-size // s)) ** 2 for s in (16, 32))
    out_boxes = g.node("Concat", boxes, axis=1, prefix="boxes")
    out_scores = g.node("Softmax", [g.node("Concat", scores, axis=1)], axis=-1, prefix="scores")
    return g.model("images", [1, 3, size, size], {out_boxes: [1, n, 4], out_scores: [1, n, classes]},
                   "ssd_mobilenet")
