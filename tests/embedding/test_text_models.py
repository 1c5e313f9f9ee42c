"""A user's own CLIP-style image-text model (two ONNX towers and a Hugging Face tokenizer.json, named by
URI) drives text search, in the spec and on the CLI.

No CLIP weights can be fetched here, so the test builds a tiny model of the same shape itself: the image
tower embeds an image as its mean colour, the text tower sums word vectors in which "red", "green" and
"blue" point along the colour axes. Only a model wired up end to end (sidecar options, tokenizer,
padding, both towers, cosine ranking, --min-score) ranks the tinted photos right.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel

from loupe_api.dataset import DatasetSpec, EmbeddingSpec, SourceRef
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import RunRequest
from loupe_storage.store import LocalStore
from loupe_workers.embedding.models import ModelError, model_spec, text_encoder_of
from loupe_workers.pipeline.run import run_dataset
from loupe_workers.use.search import search
from support.photos import jpeg, photo

TINTS = {"astronaut": (1.0, 0.25, 0.2), "coffee": (0.25, 1.0, 0.3), "chelsea": (0.2, 0.3, 1.0)}
COLOURS = {"astronaut": "red", "coffee": "green", "chelsea": "blue"}
VOCAB = ["[PAD]", "[UNK]", "a", "photo", "of", "something", "red", "green", "blue"]
CONTEXT = 8


def image_tower() -> bytes:
    """pixel_values [N, 3, 32, 32] -> image_embeds [N, 3]: the mean of each channel."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["pixel_values"], ["image_embeds"], axes=[2, 3], keepdims=0)],
        "image_tower",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    return data


def text_tower() -> bytes:
    """input_ids [N, 8] (+ attention_mask) -> text_embeds [N, 3]: the sum of the words' vectors."""
    table = np.zeros((len(VOCAB), 3), dtype=np.float32)
    for axis, word in enumerate(("red", "green", "blue")):
        table[VOCAB.index(word), axis] = 1.0
    table[VOCAB.index("something")] = (0.1, 0.1, 0.1)
    nodes = [
        helper.make_node("Gather", ["words", "input_ids"], ["vectors"]),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "last"], ["mask3"]),
        helper.make_node("Mul", ["vectors", "mask3"], ["kept"]),
        helper.make_node("ReduceSum", ["kept", "tokens"], ["text_embeds"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "text_tower",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", CONTEXT]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", CONTEXT]),
        ],
        [helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["batch", 3])],
        [
            numpy_helper.from_array(table, "words"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "last"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "tokens"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    return data


def tokenizer_json() -> str:
    tokenizer = Tokenizer(WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer.to_str()


@pytest.fixture(scope="module")
def clip_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model folder: image.onnx with its options in image.json, text.onnx and tokenizer.json."""
    root = tmp_path_factory.mktemp("clip-like")
    (root / "image.onnx").write_bytes(image_tower())
    (root / "text.onnx").write_bytes(text_tower())
    (root / "tokenizer.json").write_text(tokenizer_json())
    options = {"inputSize": 32, "crop": 1.0, "mean": [0, 0, 0], "std": [1, 1, 1],
               "textModel": "text.onnx", "contextLength": CONTEXT}  # fmt: skip
    (root / "image.json").write_text(json.dumps(options))
    return root


@pytest.fixture(scope="module")
def store(clip_like: Path, tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    root = tmp_path_factory.mktemp("tinted")
    (root / "images").mkdir()
    for name, tint in TINTS.items():
        pixels = np.asarray(photo(name, 200).convert("RGB"), dtype=np.float32) * np.asarray(tint)
        (root / "images" / f"{name}.jpg").write_bytes(jpeg(Image.fromarray(pixels.astype(np.uint8))))
    source = IngestSourceSpec.model_validate({"filesystem": {"path": str(root / "images")}})
    embedding = EmbeddingSpec(enabled=True, model=str(clip_like / "image.onnx"))
    spec = DatasetSpec(sources=[SourceRef(name="cams")], embedding=embedding)
    request = RunRequest(dataset="tinted", spec=spec, sources={"cams": source}, store_uri=str(root / "store"))
    assert run_dataset(request).created
    return LocalStore(root / "store")


def test_the_sidecar_pairs_the_towers_by_relative_uri(clip_like: Path) -> None:
    spec = model_spec(str(clip_like / "image.onnx"))
    assert spec.text_model == str(clip_like / "text.onnx") and spec.context_length == CONTEXT
    encode = text_encoder_of(spec)
    assert encode is not None
    vectors = encode(["a photo of red", "GREEN", "blue something", "nothing known here"])
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, atol=1e-5)
    assert vectors[0].argmax() == 0 and vectors[1].argmax() == 1 and vectors[2].argmax() == 2
    assert text_encoder_of(model_spec("mobilenet_v2")) is None  # the built-in has no text tower


@pytest.mark.parametrize("name", sorted(COLOURS))
def test_text_search_ranks_by_the_users_model(store: LocalStore, clip_like: Path, name: str) -> None:
    hits = search(store, "tinted", text=f"a photo of {COLOURS[name]}", model=str(clip_like / "image.onnx"))
    assert hits[0].key == f"{name}.jpg", [(h.key, h.score) for h in hits]
    assert hits[0].detail == "cosine" and -1.0 <= hits[-1].score <= hits[0].score <= 1.0


def test_cli_text_model_and_min_score(store: LocalStore, clip_like: Path) -> None:
    def loupe(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "loupe_workers.cli.main", *args], capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    model = str(clip_like / "image.onnx")
    ranked = loupe("search", "tinted", "--text", "red", "--model", model, "--json", "--store", store.uri)
    assert ranked.returncode == 0, ranked.stderr
    hits = json.loads(ranked.stdout)
    assert hits[0]["key"] == "astronaut.jpg" and len(hits) == 3
    floor = (hits[0]["score"] + hits[1]["score"]) / 2
    best = loupe("search", "tinted", "--text", "red", "--model", model, "--min-score", str(floor), "--json",
                 "--store", store.uri)  # fmt: skip
    assert [h["key"] for h in json.loads(best.stdout)] == ["astronaut.jpg"]


def test_a_broken_tokenizer_is_one_clear_error(clip_like: Path, tmp_path: Path) -> None:
    (tmp_path / "image.onnx").write_bytes(image_tower())
    (tmp_path / "text.onnx").write_bytes(text_tower())
    (tmp_path / "tokenizer.json").write_text("{not json")
    (tmp_path / "image.json").write_text(json.dumps({"textModel": "text.onnx"}))
    with pytest.raises(ModelError, match="cannot load the tokenizer"):
        text_encoder_of(model_spec(str(tmp_path / "image.onnx")))
