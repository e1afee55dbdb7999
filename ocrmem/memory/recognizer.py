"""A real pretrained OCR encoder on the CPU: PaddleOCR's PP-OCRv6 small text-line recognizer.

Each rendered line of a page is cropped on the renderer's line grid (`ocrmem.memory.render.line_boxes`),
scaled to the recognizer's 48 px height and read; its features, one frame per 8 px of the scaled
line, become the page's tokens ([pages, lines x frames, dim]). The projector then concatenates
`model.token_pool` consecutive frames of a line into one memory token: the compression knob.

Route (issue 10): the recognizer ships as ONNX inside the `rapidocr` wheel (weights Apache-2.0,
see the wheel's MODEL_LICENSES.md) and runs in onnxruntime with two tensors added as graph
outputs: the pre-CTC neck (T x 120, `layer: neck`) or the backbone (384 x T, `layer: backbone`),
beside the CTC posteriors (kept for `read_lines`, which proves the encoder reads). onnxruntime, not
torch, because the encoder is frozen and its features are cached, so it never needs autograd, and
it ran 2.5x faster on the CPU than an onnx2torch conversion. So `encoder_frozen: false` is refused.

Speed (docs/performance.md "Ingest speed"): the memory runs a graph cut at the features
(no CTC head: 18,710 classes a frame); `read_lines` builds the full graph, the alignment applies the
CTC head's weights to cached neck features. With `model.recognizer_ink_width` a line's strip is cut
to the smallest width bucket (multiples of 128 px and of a memory token's frames) holding its ink
plus PAD pixels; frames past the bucket are not computed and hold the blank strip's features, so a
line's features still depend on its own pixels alone, and a line costs only its bucket's memory
tokens (`ink_tokens`: the tail past it holds nothing but the blank strip's features, so dropping it
loses nothing; the render stage records the counts, serving computes them from the pages it draws).
Inked lines are read one at a time (results are bit-identical whatever the batch, thread count or
order), on `threads` worker threads sharing one single-threaded onnxruntime session.

    ocr_model_name: rapidocr:PP-OCRv6_rec_small      # the file inside the installed rapidocr wheel
    ocr_model_name: ./models/my_rec.onnx             # any PaddleOCR recognizer exported to ONNX
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ocrmem.memory.hub import resolve_onnx
from ocrmem.settings import ModelSettings, RenderSettings

HEIGHT, STRIDE = 48, 8  # the recognizer's input height and its frames' width in input pixels
LAYERS = {"neck": ("p2o.pd_op.transpose.8.0", 120), "backbone": ("p2o.pd_op.pool2d.1.0", 384)}
CTC_OUTPUT = "fetch_name_0"
INK = 250  # a strip whose darkest pixel is lighter than this holds no text
BUCKET = 128  # ink-width strips are cut to multiples of this (and of a memory token's frames)
PAD = 16  # background kept right of a line's last ink column (context for its last glyph)
INK_TOP = 10  # rows of a 48 px strip above this hold the line above's descenders ("g", "[", "_" reach row 8)
# at the default render (font 24, line spacing 1.25); a line's own glyphs reach below it


def _ctc_head(graph) -> tuple[np.ndarray, np.ndarray]:
    """(weight [120, classes], bias) of the linear CTC head that reads the neck."""
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.graph.initializer}
    mm = next(n for n in graph.graph.node if n.op_type == "MatMul" and n.input[0] == LAYERS["neck"][0])
    add = next(n for n in graph.graph.node if n.op_type == "Add" and mm.output[0] in n.input)
    bias = next(i for i in add.input if i != mm.output[0])
    return numpy_helper.to_array(inits[mm.input[1]]), numpy_helper.to_array(inits[bias])


def cut_graph(graph, output: str):
    """The graph with `output` as its only output and only the nodes and weights it needs (in place)."""
    import onnx

    need, keep = {output}, []
    for node in reversed(graph.graph.node):
        if any(o in need for o in node.output):
            keep.append(node)
            need.update(node.input)
    del graph.graph.node[:]
    graph.graph.node.extend(reversed(keep))
    del graph.graph.output[:]
    graph.graph.output.append(onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None))
    inits = [i for i in graph.graph.initializer if i.name in need]
    del graph.graph.initializer[:]
    graph.graph.initializer.extend(inits)
    return graph


def ort_session(graph, threads: int = 1):
    """A CPU onnxruntime session of an ONNX graph, `threads` intra-op threads (1: no spinning threads)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    return ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _load_graph(path: Path):
    """The recognizer's ONNX graph, its CTC alphabet and its CTC head."""
    import onnx

    graph = onnx.load(str(path))
    meta = {p.key: p.value for p in graph.metadata_props}
    if "character" not in meta:
        raise ValueError(f"{path}: no 'character' metadata: not a PaddleOCR recognizer export")
    alphabet = ["<blank>"] + meta["character"].splitlines() + [" "]  # PaddleOCR's CTC alphabet
    return graph, alphabet, _ctc_head(graph)


def width_buckets(width: int, unit: int) -> list[int]:
    """Strip widths an ink-width strip is cut to: multiples of lcm(BUCKET, unit) below `width`, and `width`."""
    step = np.lcm(BUCKET, unit)
    return [w for w in range(step, width, step)] + [width]


class LineRecognizerEncoder(nn.Module):
    """Frozen PP-OCR recognizer over a page's line strips: [P, 1, H, W] uint8 -> [P, lines x T, dim]."""

    kind = "ppocr_rec"
    grid = "line"  # tokens run along lines: the projector concatenates neighbours instead of k x k pooling

    def __init__(self, model_path: Path, rs: RenderSettings, layer: str = "neck", pool: int = 1,
                 cache_lines: int = 8192, ink_width: bool = False, threads: int | None = None):
        super().__init__()
        from ocrmem.memory.render import line_boxes, line_height

        self.path, self.layer, self.page_size = Path(model_path), layer, rs.page_size
        # strip digest -> its features: a line already read (on another page, in an earlier call) is not
        # read again. Keyed by the strip's pixels, so it cannot serve stale features; LRU, ~46 kB a line.
        self.lines: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.cache_lines, self.lines_read = cache_lines, 0
        self.boxes = line_boxes(rs)
        x0, y0, x1, y1 = self.boxes[0]
        self.width = -(-round((x1 - x0) * HEIGHT / line_height(rs)) // (STRIDE * pool)) * STRIDE * pool
        self.frames = self.width // STRIDE  # per line; a multiple of the projector's pool
        self.out_dim = LAYERS[layer][1]
        self.tokens_per_page = len(self.boxes) * self.frames
        self.ink_width, self.pool = ink_width, pool
        self.buckets = width_buckets(self.width, STRIDE * pool) if ink_width else [self.width]
        self.threads = max(1, threads or torch.get_num_threads())  # lines read at once, one core each
        self._sess = self._reader = self._alphabet = self._head = self._blank = self._pool = None  # built on use

    @classmethod
    def from_settings(cls, ms: ModelSettings, rs: RenderSettings) -> "LineRecognizerEncoder":
        return cls(resolve_onnx(ms.ocr_model_name), rs, ms.recognizer_layer, ms.token_pool,
                   ink_width=ms.recognizer_ink_width)

    @classmethod
    def page_tokens(cls, ms: ModelSettings, rs: RenderSettings) -> int:
        return cls(Path(ms.ocr_model_name), rs, ms.recognizer_layer, ms.token_pool).tokens_per_page

    @classmethod
    def ink_pricer(cls, ms: ModelSettings, rs: RenderSettings) -> LineRecognizerEncoder | None:
        """With `recognizer_ink_width`: the geometry (no weights) whose `ink_tokens` prices drawn pages."""
        if not ms.recognizer_ink_width:
            return None
        return cls(Path(ms.ocr_model_name), rs, ms.recognizer_layer, ms.token_pool, ink_width=True)

    def __getstate__(self):  # sessions and threads do not pickle: a copy builds its own on first use
        return {**self.__dict__, "_sess": None, "_reader": None, "_pool": None}

    def _load(self) -> None:
        if self._sess is None:
            self._sess = ort_session(self.features_graph())

    def features_graph(self):
        """The recognizer's ONNX graph cut at the features of `layer`: no CTC head (18,710 classes a frame)."""
        graph, self._alphabet, self._head = _load_graph(self.path)
        return cut_graph(graph, LAYERS[self.layer][0])

    @property
    def alphabet(self) -> list[str]:
        self._load()
        return self._alphabet

    def ctc_argmax(self, neck: torch.Tensor) -> np.ndarray:
        """The CTC head's best class per frame of neck features [..., T, 120] (what the recognizer reads)."""
        if self.layer != "neck":
            raise ValueError("reading features back needs model.recognizer_layer: neck (the CTC head reads the neck)")
        self._load()
        w, b = self._head
        return (neck.float().cpu().numpy() @ w + b).argmax(-1)

    def features(self, strip: np.ndarray) -> np.ndarray:
        """Features [width / 8, dim] of one uint8 strip [48, width]: the only place the model runs."""
        self._load()
        x = np.empty((1, 3) + strip.shape, np.float32)
        np.divide(strip, np.float32(127.5), out=x[0, 0], dtype=np.float32)
        x[0, 0] -= 1.0  # [-1, 1], as PaddleOCR normalises
        x[0, 1:] = x[0, 0]  # gray -> 3 channels (BGR order is moot)
        feats = self._sess.run(None, {"x": x})[0]
        return feats[0, :, 0].T if self.layer == "backbone" else feats[0]  # [1, 384, 1, T] -> [T, 384]

    def line_strips(self, pixel_values: torch.Tensor) -> list[np.ndarray | None]:
        """Each line of each page as a uint8 strip [48, w] at the recognizer's scale, w the full width
        or (ink_width) the smallest bucket holding the line's ink; None for a line without ink."""
        out = []
        for page in pixel_values[:, 0].cpu().numpy():  # onnxruntime reads host memory, wherever the model lives
            for x0, y0, x1, y1 in self.boxes:
                crop = page[y0:y1, x0:x1]
                if crop.size == 0 or int(crop.min()) >= INK:
                    out.append(None)
                    continue
                w = min(self.width, round(crop.shape[1] * HEIGHT / max(1, crop.shape[0])))
                img = np.full((HEIGHT, self.width), 255, np.uint8)
                img[:, :w] = np.asarray(Image.fromarray(crop).resize((w, HEIGHT), Image.BILINEAR))
                if self.ink_width:  # the line's own ink: below the top rows, where the line above's descenders reach
                    cols = np.flatnonzero(img[INK_TOP:].min(0) < INK)
                    if not len(cols):  # only the line above's descenders: a blank line
                        out.append(None)
                        continue
                    end = int(cols[-1]) + 1 + PAD
                    img = img[:, :next(b for b in self.buckets if b >= min(end, self.width))]
                out.append(img)
        return out

    def ink_tokens(self, pixel_values: torch.Tensor) -> list[list[int]]:
        """Memory tokens each grid line of each page pays for with ink-width strips: its strip's bucket in
        tokens (`pool` frames each), 0 for a line without ink of its own."""
        per_page, unit = len(self.boxes), STRIDE * self.pool
        counts = [0 if s is None else s.shape[1] // unit for s in self.line_strips(pixel_values)]
        return [counts[i:i + per_page] for i in range(0, len(counts), per_page)]

    def ink_rule(self) -> dict:
        """What `ink_tokens` depends on besides the pixels (the render stage's fingerprint holds it)."""
        return {"boxes": [list(b) for b in self.boxes], "width": self.width, "buckets": self.buckets,
                "pool": self.pool, "pad": PAD, "ink": INK, "ink_top": INK_TOP}

    def strips(self, pixel_values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Every line strip at full width, normalised to [-1, 1] ([P x lines, 48, width]), and which
        ones hold ink (read_lines, diagnostics)."""
        blank = np.full((HEIGHT, self.width), 255, np.uint8)
        lines = self.line_strips(pixel_values)
        full = [blank if s is None else np.pad(s, ((0, 0), (0, self.width - s.shape[1])), constant_values=255)
                for s in lines]
        x = np.stack(full).astype(np.float32) / 127.5 - 1.0 if full else np.zeros((0, HEIGHT, self.width), np.float32)
        return x, np.array([s is not None for s in lines])

    def _blank_features(self) -> np.ndarray:
        if self._blank is None:  # a blank strip reads the same every time: run it once
            self._blank = self.features(np.full((HEIGHT, self.width), 255, np.uint8))
        return self._blank

    def _read_all(self, strips: dict[bytes, np.ndarray]) -> dict[bytes, np.ndarray]:
        """Features of distinct strips not in the line cache, `threads` at a time: each one alone, so a
        line's features depend on its pixels only (onnxruntime's last bits change with the batch a row
        runs in: batch 1 and 3 differ from 2, 7, 16), whatever the page, batch of pages or thread."""
        found = {k: self.lines.get(k) for k in strips}
        todo = [k for k, f in found.items() if f is None]
        if len(todo) > 1 and self.threads > 1:
            if self._pool is None or self._pool[0] != os.getpid():  # a forked child has none of the threads
                self._pool = (os.getpid(), ThreadPoolExecutor(self.threads, thread_name_prefix="ocrmem-rec"))
            feats = list(self._pool[1].map(self.features, [strips[k] for k in todo]))
        else:
            feats = [self.features(strips[k]) for k in todo]
        self.lines_read += len(todo)
        for k, f in zip(todo, feats):
            found[k] = f
            if self.cache_lines:
                self.lines[k] = f
        for k in strips:
            if k in self.lines:
                self.lines.move_to_end(k)
        while len(self.lines) > self.cache_lines:
            self.lines.popitem(last=False)
        return found

    def clear_cache(self) -> None:
        self.lines.clear()

    def forget(self, pixel_values: torch.Tensor) -> None:
        """Drop these pages' lines from the line cache (benchmarks: text never read before)."""
        for s in self.line_strips(pixel_values):
            if s is not None:
                self.lines.pop(_strip_key(s), None)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self._load()  # before the worker threads: one session
        strips = self.line_strips(pixel_values)
        keys = [None if s is None else _strip_key(s) for s in strips]
        found = self._read_all({k: s for k, s in zip(keys, strips) if k is not None})
        feats = np.empty((len(strips), self.frames, self.out_dim), np.float32)
        feats[:] = self._blank_features()  # blank lines, and frames past an ink-width strip
        for i, k in enumerate(keys):
            if k is not None:
                f = found[k]
                feats[i, :len(f)] = f
        feats = torch.from_numpy(feats).reshape(len(pixel_values), self.tokens_per_page, self.out_dim)
        return feats.to(pixel_values.device)

    def read_lines(self, pixel_values: torch.Tensor) -> list[list[str]]:
        """Greedy CTC reading of each page's inked lines with the whole recognizer, CTC head included:
        what it sees (tests, diagnostics)."""
        x, inked = self.strips(pixel_values)
        self._load()
        if self._reader is None:
            self._reader = ort_session(_load_graph(self.path)[0], self.threads)
        per_page = len(self.boxes)
        x3 = np.repeat(x[:, None], 3, axis=1)
        probs = self._reader.run([CTC_OUTPUT], {"x": x3})[0] if len(x) else np.zeros((0, self.frames, 1))
        texts = [_ctc_greedy(p, self._alphabet) for p in probs]
        return [[t for t, ink in zip(texts[i:i + per_page], inked[i:i + per_page]) if ink]
                for i in range(0, len(texts), per_page)]

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        size = (self.page_size, self.page_size)
        arr = np.stack([np.asarray(im.convert("L") if im.size == size else im.convert("L").resize(size))
                        for im in images])
        return torch.from_numpy(arr).unsqueeze(1)  # uint8 [P, 1, H, W]

    def train(self, mode: bool = True) -> "LineRecognizerEncoder":
        return super().train(False)  # onnxruntime: always inference (settings refuse encoder_frozen: false)

    def fingerprint(self) -> dict:
        fp = {"kind": self.kind, "model": self.path.name, "bytes": self.path.stat().st_size, "layer": self.layer,
              "boxes": [list(b) for b in self.boxes], "width": self.width}  # JSON-shaped: the cache index compares it
        if self.ink_width:  # only when on: caches of full-width strips stay valid
            fp.update(buckets=self.buckets, pad=PAD, graph="features")
        return fp


def _strip_key(strip: np.ndarray) -> bytes:
    h = hashlib.blake2b(strip.tobytes(), digest_size=16)
    h.update(np.int32(strip.shape[1]).tobytes())  # same pixels, other width: another strip
    return h.digest()


def _ctc_greedy(probs: np.ndarray, alphabet: list[str]) -> str:
    best = probs.argmax(-1)
    keep = (best != 0) & np.concatenate([[True], best[1:] != best[:-1]])
    return "".join(alphabet[i] for i in best[keep])
