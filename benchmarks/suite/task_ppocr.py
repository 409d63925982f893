"""PP-OCRv4 text-line recognizer (the model ``rapidocr-onnxruntime`` ships) on rendered dictionary words.

* Model: ``rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx`` as shipped (ONNX frontend), input
  ``x`` (N, 3, 48, W), output (N, W/8, 6625) character probabilities; its character list is the
  model's ``character`` metadata, read as rapidocr reads it (``blank`` first, a space last).
* Data: text lines of one or two words drawn from the Debian ``wamerican`` word list
  (``/usr/share/dict/words``; ASCII letters only, 3-12 letters), rendered with PIL in the DejaVu fonts
  (Debian ``fonts-dejavu-core``/``-extra``, or the copies matplotlib ships) at 26-38 px, dark text on a
  light background, a few pixels of margin; lines wider than 320/48 are redrawn as one word.
* Preprocessing: exactly rapidocr's ``TextRecognizer.resize_norm_img`` (BGR image, height 48, width
  ``ceil(48 * w / h)`` by ``cv2.resize``, ``/255``, ``-0.5``, ``/0.5``, zero-padded to 320), in
  batches of 6 (its ``rec_batch_num``): each feed is one (6, 3, 48, 320) batch.
* Eval: 240 lines (40 feeds, seed 0); calibration: 120 other lines (20 feeds, seed 1).
* Metric: exact match of rapidocr's greedy CTC decoding (``CTCLabelDecode``) with the rendered text,
  both stripped of leading/trailing spaces (the line's margins often decode as a space).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from tasks import package_versions, write_task_folder

__all__ = ["build", "model_path", "characters", "render_line", "resize_norm_img", "words"]

HEIGHT, WIDTH, BATCH = 48, 320, 6
EVAL_FEEDS, CALIB_FEEDS = 40, 20
WORDS_FILE = Path("/usr/share/dict/words")
FONT_NAMES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf", "DejaVuSansMono.ttf", "DejaVuSansCondensed.ttf", "DejaVuSerif-Italic.ttf",
)  # fmt: skip


def model_path() -> Path:
    import rapidocr_onnxruntime

    return Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_rec_infer.onnx"


def characters(path: Path) -> list[str]:
    """The decoder's classes, as rapidocr builds them: ``blank``, the model's list, a space."""
    import onnxruntime as ort

    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    return ["blank", *meta.custom_metadata_map["character"].splitlines(), " "]


def words() -> list[str]:
    if not WORDS_FILE.exists():
        raise ModuleNotFoundError(f"{WORDS_FILE} is missing: apt-get install wamerican")
    found = [w.strip() for w in WORDS_FILE.read_text(encoding="utf-8", errors="ignore").splitlines()]
    return sorted({w for w in found if 3 <= len(w) <= 12 and w.isascii() and w.isalpha()})


def _fonts() -> list[Path]:
    import matplotlib

    places = [Path("/usr/share/fonts/truetype/dejavu"), Path(matplotlib.__file__).parent / "mpl-data/fonts/ttf"]
    found = []
    for name in FONT_NAMES:
        for place in places:
            if (place / name).exists():
                found.append(place / name)
                break
    if not found:
        raise ModuleNotFoundError("no DejaVu font found: apt-get install fonts-dejavu-core (or pip install matplotlib)")
    return found


def render_line(text: str, font_path: Path, size: int, rng: np.random.Generator) -> np.ndarray:
    """``text`` drawn dark on light, cropped to its box plus a small margin: (h, w, 3) uint8 BGR."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_path), size)
    left, top, right, bottom = font.getbbox(text)
    margin_x, margin_y = int(rng.integers(2, 10)), int(rng.integers(2, 8))
    background = tuple(int(v) for v in rng.integers(190, 256, size=3))
    ink = tuple(int(v) for v in rng.integers(0, 90, size=3))
    image = Image.new("RGB", (right - left + 2 * margin_x, bottom - top + 2 * margin_y), background)
    ImageDraw.Draw(image).text((margin_x - left, margin_y - top), text, font=font, fill=ink)
    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1])


def resize_norm_img(img: np.ndarray, max_wh_ratio: float) -> np.ndarray:
    """rapidocr's ``TextRecognizer.resize_norm_img`` (rec_img_shape [3, 48, 320])."""
    import cv2

    img_width = int(HEIGHT * max_wh_ratio)
    h, w = img.shape[:2]
    ratio = w / float(h)
    resized_w = img_width if math.ceil(HEIGHT * ratio) > img_width else int(math.ceil(HEIGHT * ratio))
    resized = cv2.resize(img, (resized_w, HEIGHT)).astype("float32")
    resized = resized.transpose((2, 0, 1)) / 255
    resized -= 0.5
    resized /= 0.5
    padded = np.zeros((3, HEIGHT, img_width), dtype=np.float32)
    padded[:, :, 0:resized_w] = resized
    return padded


def _lines(count: int, vocabulary: list[str], fonts: list[Path], rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    lines = []
    while len(lines) < count:
        n_words = 1 if rng.random() < 0.6 else 2
        text = " ".join(vocabulary[int(i)] for i in rng.integers(0, len(vocabulary), size=n_words))
        font = fonts[int(rng.integers(0, len(fonts)))]
        image = render_line(text, font, int(rng.integers(26, 39)), rng)
        if image.shape[1] / image.shape[0] > WIDTH / HEIGHT:
            continue  # rapidocr would widen the whole batch; keep every batch at 320
        lines.append((text, image))
    return lines


def _feeds(lines: list[tuple[str, np.ndarray]]) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    feeds, refs = [], []
    for start in range(0, len(lines), BATCH):
        batch = lines[start : start + BATCH]
        x = np.stack([resize_norm_img(image, WIDTH / HEIGHT) for _, image in batch]).astype(np.float32)
        feeds.append({"x": x})
        refs.append({"text": np.array([text for text, _ in batch])})
    return feeds, refs


def build(folder: Path) -> None:
    path = model_path()
    vocabulary, fonts = words(), _fonts()
    eval_feeds, eval_refs = _feeds(_lines(EVAL_FEEDS * BATCH, vocabulary, fonts, np.random.default_rng(0)))
    calib, _ = _feeds(_lines(CALIB_FEEDS * BATCH, vocabulary, fonts, np.random.default_rng(1)))
    output = "softmax_11.tmp_0"
    task = {
        "name": "ppocr_rec",
        "description": "PP-OCRv4 text-line recognizer (rapidocr-onnxruntime) on dictionary words rendered "
        "in DejaVu fonts; exact match of the greedy CTC decoding",
        "source": {
            "model": "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
            "data": f"{WORDS_FILE} (Debian wamerican) rendered with {', '.join(f.name for f in fonts)}",
            "packages": package_versions(["rapidocr-onnxruntime", "opencv-python", "pillow", "matplotlib"]),
        },
        "metric": "ctc_exact_match",
        "metric_params": {"output": output, "characters": characters(path), "blank": 0},
        "higher_is_better": True,
        "approach": "static",
        "inputs": [["x", ["batch", 3, HEIGHT, WIDTH], "float32"]],
        "outputs": [[output, ["batch", WIDTH // 8, 6625], "float32"]],
        "frontend": "onnx",
        "latency_feed": 0,
    }
    write_task_folder(folder, task, path, calib, eval_feeds, eval_refs)
