"""A misspelt field in a spec is named with the field it probably meant, at any depth, before anything
is written; with no close match the message lists the fields of that place."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loupe_api.resources import SpecError, parse_resource
from support.cli import QUICKSTART, loupe


def dataset_document() -> dict[str, object]:
    documents = list(yaml.safe_load_all(QUICKSTART.read_text()))
    found: dict[str, object] = next(d for d in documents if d["kind"] == "Dataset")
    return found


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (lambda s: s.__setitem__("splitz", s.pop("splits")), "spec.splitz", "did you mean splits?"),
        (
            lambda s: s["qualityGates"].__setitem__("blurr", s["qualityGates"].pop("blur")),
            "spec.qualityGates.blurr",
            "did you mean blur?",
        ),
        (lambda s: s["sources"][0].__setitem__("nmae", "x"), "spec.sources[0].nmae", "did you mean name?"),
        (lambda s: s.__setitem__("zzzqq", 1), "spec.zzzqq", "the fields here are access, dedup, drift"),
    ],
)
def test_unknown_fields_get_a_suggestion(change: object, path: str, message: str) -> None:
    document = dataset_document()
    change(document["spec"])  # type: ignore[operator]
    with pytest.raises(SpecError) as refused:
        parse_resource(document, "loupe.yaml")
    said = dict(refused.value.errors)
    assert message in said[path], said


def test_the_cli_refuses_before_writing(tmp_path: Path) -> None:
    text = QUICKSTART.read_text().replace("  splits:", "  splitz:")
    (tmp_path / "loupe.yaml").write_text(text)
    done = loupe("run", "-f", "loupe.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert "spec.splitz: unknown field (did you mean splits?)" in done.stderr
    assert not (tmp_path / ".loupe").exists()
