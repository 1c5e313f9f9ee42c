"""The metadata and label JSON that curation memoises per distinct value (pipeline.run._JsonTexts):
each row's text is what encoding that row's own value gives, whatever rows came before."""

from __future__ import annotations

import json
from typing import Any

from loupe_workers.ingest.annotate import LabelSet
from loupe_workers.pipeline.run import _JsonTexts


def test_label_texts_follow_each_rows_label() -> None:
    texts = _JsonTexts()
    sets = [LabelSet("dent"), LabelSet("scratch"), LabelSet("dent"), LabelSet(None), LabelSet(""),
            LabelSet("dent", [{"class": "dent", "box": [0, 0, 1, 1]}]), LabelSet("dent"),
            LabelSet("dent", [{"class": "scratch", "box": [0, 0, 1, 1]}]), LabelSet("scratch")]  # fmt: skip
    assert [texts.labels(s) for s in sets] == [s.to_json() for s in sets]
    relabelled = LabelSet("dent")  # a carried key whose label changed since the memo saw it
    relabelled.label = "ok"
    assert json.loads(texts.labels(relabelled))["label"] == "ok"


def test_metadata_texts_follow_each_rows_metadata() -> None:
    texts = _JsonTexts()
    values: list[dict[str, Any]] = [{}, {"camera": "1"}, {"camera": "2"}, {"camera": "1", "site": "a"},
                                    {"site": "a", "camera": "1"}, {"camera": "1"}, {}, {"camera": 1},
                                    {"camera": "1"}]  # fmt: skip
    assert [texts.metadata(v) for v in values] == [json.dumps(v, sort_keys=True) for v in values]
