"""Search by text, by example image and by metadata filter, from Python and from `loupe search`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loupe_api.dataset import DatasetSpec, EmbeddingSpec, SourceRef
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import RunRequest
from loupe_storage.store import LocalStore
from loupe_workers.pipeline.run import run_dataset
from loupe_workers.use.search import SearchError, compile_filter, search
from support.cli import loupe
from support.photos import TRANSFORMS, jpeg, photo

PHOTOS = {
    "animals": ("chelsea", "horse"),
    "objects": ("coffee", "rocket", "motorcycle", "coins"),
    "people": ("astronaut", "camera"),
    "space": ("moon",),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    root = tmp_path_factory.mktemp("search")
    for label, names in PHOTOS.items():
        (root / "images" / label).mkdir(parents=True)
        for name in names:
            (root / "images" / label / f"{name}.jpg").write_bytes(jpeg(photo(name, 256)))
    source = IngestSourceSpec.model_validate(
        {
            "filesystem": {"path": str(root / "images")},
            "labels": {"format": "folder"},
            "metadata": {"static": {"site": "lab"}},
        }
    )
    spec = DatasetSpec(sources=[SourceRef(name="cams")], embedding=EmbeddingSpec(enabled=True))
    request = RunRequest(dataset="photos", spec=spec, sources={"cams": source}, store_uri=str(root / "store"))
    assert run_dataset(request).created
    return LocalStore(root / "store")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("cat", "chelsea"),
        ("coffee", "coffee"),
        ("rocket", "rocket"),
        ("motorbike", "motorcycle"),
        ("a cup of espresso", "coffee"),
    ],
)
def test_text_search_finds_what_a_person_would(store: LocalStore, query: str, expected: str) -> None:
    hits = search(store, "photos", text=query, limit=3)
    assert hits[0].key.endswith(f"/{expected}.jpg"), [(h.key, h.score, h.detail) for h in hits]
    assert hits[0].score > hits[1].score >= hits[2].score
    assert hits[0].detail.startswith("as ")


def test_search_by_example_image(store: LocalStore, tmp_path: Path) -> None:
    query = jpeg(TRANSFORMS["crop75"](TRANSFORMS["flip"](photo("chelsea", 300))))  # not in the dataset
    hits = search(store, "photos", image=query, limit=9)
    assert hits[0].key == "animals/chelsea.jpg" and hits[0].score > 0.8
    assert all(h.score < 0.7 for h in hits[1:])
    assert len(hits) == 9 and hits[0].label == "animals" and hits[0].split in ("train", "val", "test")


def test_filter_expressions_alone_and_with_ranking(store: LocalStore) -> None:
    animals = search(store, "photos", where='label == "animals"')
    assert sorted(h.key for h in animals) == ["animals/chelsea.jpg", "animals/horse.jpg"]
    assert {h.score for h in animals} == {1.0}
    objects = search(
        store, "photos", where='site == "lab" and label in ["objects", "space"] and width >= 200'
    )
    assert len(objects) == 5
    assert search(store, "photos", where='site == "elsewhere"') == []
    not_cats = search(store, "photos", text="cat", where='label != "animals"', limit=20)
    assert len(not_cats) == 7 and all(not h.key.startswith("animals/") for h in not_cats)


def test_filter_language_is_closed() -> None:
    ok = compile_filter('width > 100 and not "blurry" in flags and camera == None')
    assert ok({"width": 300, "flags": []}) and not ok({"width": 300, "flags": ["blurry"]})
    assert not compile_filter("width > 100")({})  # an unknown field is None: the comparison is false
    for bad in ('__import__("os").system("true")', "label.upper() == 'X'", "width +", "[x for x in flags]"):
        with pytest.raises(SearchError):
            compile_filter(bad)
    with pytest.raises(SearchError, match="give an example image"):
        search(LocalStore("/nonexistent"), "photos")


def test_cli_search_json_and_table(store: LocalStore, tmp_path: Path) -> None:
    result = loupe("search", "photos@1.0.0", "--text", "rocket", "--json", "-k", "2", "--store", store.uri)
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert hits[0]["key"] == "objects/rocket.jpg" and len(hits) == 2
    assert set(hits[0]) == {"score", "sampleId", "sha256", "source", "key", "uri", "label", "split", "detail"}
    ranked = json.loads(
        loupe("search", "photos", "--text", "rocket", "--json", "-k", "20", "--store", store.uri).stdout
    )
    floor = (ranked[1]["score"] + ranked[2]["score"]) / 2  # between the second and the third hit
    kept = loupe("search", "photos", "--text", "rocket", "--json", "-k", "20", "--min-score", str(floor),
                 "--store", store.uri)  # fmt: skip
    assert [h["key"] for h in json.loads(kept.stdout)] == [h["key"] for h in ranked[:2]]
    example = tmp_path / "query.jpg"
    example.write_bytes(jpeg(TRANSFORMS["reframe"](photo("coffee", 300))))
    table = loupe(
        "search", "photos", "--image", str(example), "--where", 'label == "objects"', "--store", store.uri
    )
    assert table.returncode == 0, table.stderr
    assert table.stdout.index("coffee.jpg") < table.stdout.index("rocket.jpg")
    bad = loupe("search", "photos", "--where", "open('x')", "--store", store.uri)
    assert bad.returncode == 2 and "not allowed" in bad.stderr
    missing = loupe("search", "nothing", "--text", "cat", "--store", store.uri)
    assert missing.returncode == 1 and "no versions" in missing.stderr


def test_a_misspelt_filter_field_is_refused_with_a_suggestion(store: LocalStore) -> None:
    with pytest.raises(SearchError, match=r"no sample has a field 'lable' \(did you mean label\?\)"):
        search(store, "photos", where='lable == "animals"')
    with pytest.raises(SearchError, match="no sample has a field 'stie'"):
        search(store, "photos", text="cat", where='stie == "lab"')
    assert [h.label for h in search(store, "photos", where='site == "lab" and label == "space"')] == ["space"]
