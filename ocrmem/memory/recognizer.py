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

    ocr_model_name: rapidocr:PP-OCRv6_rec_small      # the file inside the installed rapidocr wheel
    ocr_model_name: ./models/my_rec.onnx             # any PaddleOCR recognizer exported to ONNX
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
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


def _ctc_head(graph) -> tuple[np.ndarray, np.ndarray]:
    """(weight [120, classes], bias) of the linear CTC head that reads the neck."""
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.graph.initializer}
    mm = next(n for n in graph.graph.node if n.op_type == "MatMul" and n.input[0] == LAYERS["neck"][0])
    add = next(n for n in graph.graph.node if n.op_type == "Add" and mm.output[0] in n.input)
    bias = next(i for i in add.input if i != mm.output[0])
    return numpy_helper.to_array(inits[mm.input[1]]), numpy_helper.to_array(inits[bias])


def _session(path: Path, layer: str):
    """An onnxruntime session returning (CTC posteriors, features of `layer`), and the CTC alphabet."""
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(path))
    meta = {p.key: p.value for p in graph.metadata_props}
    if "character" not in meta:
        raise ValueError(f"{path}: no 'character' metadata: not a PaddleOCR recognizer export")
    graph.graph.output.append(onnx.helper.make_tensor_value_info(LAYERS[layer][0], onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = torch.get_num_threads(), 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    alphabet = ["<blank>"] + meta["character"].splitlines() + [" "]  # PaddleOCR's CTC alphabet
    return sess, alphabet, _ctc_head(graph)


class LineRecognizerEncoder(nn.Module):
    """Frozen PP-OCR recognizer over a page's line strips: [P, 1, H, W] uint8 -> [P, lines x T, dim]."""

    kind = "ppocr_rec"
    grid = "line"  # tokens run along lines: the projector concatenates neighbours instead of k x k pooling

    def __init__(self, model_path: Path, rs: RenderSettings, layer: str = "neck", pool: int = 1,
                 cache_lines: int = 8192):
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
        self._sess = self._alphabet = self._head = self._blank = None  # built on first use: light to construct

    @classmethod
    def from_settings(cls, ms: ModelSettings, rs: RenderSettings) -> "LineRecognizerEncoder":
        return cls(resolve_onnx(ms.ocr_model_name), rs, ms.recognizer_layer, ms.token_pool)

    @classmethod
    def page_tokens(cls, ms: ModelSettings, rs: RenderSettings) -> int:
        return cls(Path(ms.ocr_model_name), rs, ms.recognizer_layer, ms.token_pool).tokens_per_page

    def _load(self) -> None:
        if self._sess is None:
            self._sess, self._alphabet, self._head = _session(self.path, self.layer)

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

    def _run(self, strips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._load()
        x = np.repeat(strips[:, None], 3, axis=1)  # gray -> 3 channels (BGR order is moot)
        probs, feats = self._sess.run([CTC_OUTPUT, LAYERS[self.layer][0]], {"x": x})
        if self.layer == "backbone":
            feats = feats[:, :, 0].transpose(0, 2, 1)  # [n, 384, 1, T] -> [n, T, 384]
        return probs, feats

    def strips(self, pixel_values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Every line strip at the recognizer's size, normalised to [-1, 1] ([P x lines, 48, width]),
        and which ones hold ink."""
        out, inked = [], []
        for page in pixel_values[:, 0].cpu().numpy():  # onnxruntime reads host memory, wherever the model lives
            for x0, y0, x1, y1 in self.boxes:
                crop = page[y0:y1, x0:x1]
                inked.append(crop.size > 0 and int(crop.min()) < INK)
                w = round(crop.shape[1] * HEIGHT / max(1, crop.shape[0]))
                img = np.full((HEIGHT, self.width), 255, np.uint8)
                img[:, :w] = np.asarray(Image.fromarray(crop).resize((w, HEIGHT), Image.BILINEAR))
                out.append(img)
        return (np.stack(out).astype(np.float32) / 127.5 - 1.0), np.array(inked)

    def _blank_features(self) -> np.ndarray:
        if self._blank is None:  # a blank strip reads the same every time: run it once
            self._blank = self._run(np.ones((1, HEIGHT, self.width), np.float32))[1][0]
        return self._blank

    def _read(self, strip: np.ndarray) -> np.ndarray:
        """Features [T, dim] of one inked strip, from the line cache or one recognizer run of that strip
        alone: onnxruntime's results differ in the last bits with the batch a row runs in (measured:
        batch 1 and 3 differ from 2, 7, 16), so a line's features depend on its pixels only, and a page
        encoded on its own, in a batch of pages or a line at a time is bit-identical. Batching bought no
        speed on the CPU (62 lines: 6.42 s batched, 6.41 s one by one)."""
        key = _strip_key(strip)
        f = self.lines.get(key)
        if f is None:
            f = self._run(strip[None])[1][0]
            self.lines_read += 1
            if self.cache_lines:
                self.lines[key] = f
                while len(self.lines) > self.cache_lines:
                    self.lines.popitem(last=False)
        else:
            self.lines.move_to_end(key)
        return f

    def clear_cache(self) -> None:
        self.lines.clear()

    def forget(self, pixel_values: torch.Tensor) -> None:
        """Drop these pages' lines from the line cache (benchmarks: text never read before)."""
        x, inked = self.strips(pixel_values)
        for i in np.flatnonzero(inked):
            self.lines.pop(_strip_key(x[i]), None)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x, inked = self.strips(pixel_values)
        feats = np.broadcast_to(self._blank_features(), (len(x), self.frames, self.out_dim)).copy()
        for i in np.flatnonzero(inked):
            feats[i] = self._read(x[i])
        feats = torch.from_numpy(feats).reshape(len(pixel_values), self.tokens_per_page, self.out_dim)
        return feats.to(pixel_values.device)

    def read_lines(self, pixel_values: torch.Tensor) -> list[list[str]]:
        """Greedy CTC reading of each page's inked lines: what the recognizer sees (tests, diagnostics)."""
        x, inked = self.strips(pixel_values)
        per_page = len(self.boxes)
        probs = self._run(x)[0] if len(x) else np.zeros((0, self.frames, 1))
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
        return {"kind": self.kind, "model": self.path.name, "bytes": self.path.stat().st_size, "layer": self.layer,
                "boxes": [list(b) for b in self.boxes], "width": self.width}  # JSON-shaped: the cache index compares it


def _strip_key(strip: np.ndarray) -> bytes:
    return hashlib.blake2b(strip.tobytes(), digest_size=16).digest()


def _ctc_greedy(probs: np.ndarray, alphabet: list[str]) -> str:
    best = probs.argmax(-1)
    keep = (best != 0) & np.concatenate([[True], best[1:] != best[:-1]])
    return "".join(alphabet[i] for i in best[keep])
