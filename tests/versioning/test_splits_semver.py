"""Split assignment (deterministic, balanced, leak-free, sticky) and semantic version decisions."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from loupe_workers.curation.splits import SPLIT_NAMES, SplitUnit, assign_splits
from loupe_workers.versioning.semver import FIRST_VERSION, SampleState, decide, next_version, version_key

RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1}


def sample_id(i: int, tag: str = "") -> str:
    return hashlib.sha256(f"{tag}{i}".encode()).hexdigest()


def singles(n: int, tag: str = "", stratum: str = "") -> list[SplitUnit]:
    return [SplitUnit((sample_id(i, tag),), stratum) for i in range(n)]


def counts(assignment: dict[str, str], ids: list[str] | None = None) -> Counter[str]:
    return Counter(assignment[i] for i in (ids if ids is not None else assignment))


def assert_ratios(found: Counter[str], total: int, ratios: dict[str, float], slack: int) -> None:
    assert sum(found.values()) == total
    for split in SPLIT_NAMES:
        assert abs(found[split] - ratios.get(split, 0.0) * total) <= slack, (split, found, total)


def test_every_sample_gets_a_known_split() -> None:
    units = singles(50)
    assignment = assign_splits(units, RATIOS, 0, {})
    assert set(assignment) == {u.members[0] for u in units}
    assert set(assignment.values()) <= set(SPLIT_NAMES)
    assert assign_splits([], RATIOS, 0, {}) == {}


def test_deterministic_for_a_seed() -> None:
    units = singles(1000)
    first = assign_splits(units, RATIOS, 7, {})
    assert assign_splits(units, RATIOS, 7, {}) == first
    assert assign_splits(list(reversed(units)), RATIOS, 7, {}) == first  # input order does not matter


def test_different_seeds_give_different_assignments() -> None:
    units = singles(1000)
    a, b = assign_splits(units, RATIOS, 0, {}), assign_splits(units, RATIOS, 1, {})
    moved = sum(a[k] != b[k] for k in a)
    assert moved > 100, moved  # ~ 2 * 0.8 * 0.2 * 1000 = 320 expected
    assert counts(a) == counts(b)


@pytest.mark.parametrize(
    "ratios",
    [
        RATIOS,
        {"train": 0.7, "val": 0.15, "test": 0.15},
        {"train": 0.5, "val": 0.5, "test": 0.0},
        {"train": 1.0, "val": 0.0, "test": 0.0},
    ],
)
def test_ratios_are_met_on_1000_units(ratios: dict[str, float]) -> None:
    assignment = assign_splits(singles(1000), ratios, 3, {})
    assert_ratios(counts(assignment), 1000, ratios, slack=2)
    for split, ratio in ratios.items():
        if ratio == 0:
            assert counts(assignment)[split] == 0


def test_stratification_keeps_ratios_in_every_stratum() -> None:
    units = singles(600, "a", "scratch") + singles(300, "b", "dent") + singles(100, "c", "ok")
    assignment = assign_splits(units, RATIOS, 0, {})
    for stratum, size in (("scratch", 600), ("dent", 300), ("ok", 100)):
        ids = [u.members[0] for u in units if u.stratum == stratum]
        assert_ratios(counts(assignment, ids), size, RATIOS, slack=1)
    # a rare stratum still reaches every split
    rare = singles(10, "d", "crack")
    rare_assignment = assign_splits(units + rare, RATIOS, 0, {})
    assert counts(rare_assignment, [u.members[0] for u in rare]) == Counter(train=8, val=1, test=1)


def grouped_units(n: int, tag: str = "") -> list[SplitUnit]:
    """n units of 1 to 5 members (near-duplicate groups), 3 strata."""
    units = []
    for i in range(n):
        size = 1 + (i * 7) % 5
        members = tuple(sample_id(i * 10 + k, tag) for k in range(size))
        units.append(SplitUnit(members, ("a", "b", "c")[i % 3]))
    return units


def test_a_group_never_straddles_splits() -> None:
    units = grouped_units(600)
    assignment = assign_splits(units, RATIOS, 11, {})
    total = sum(len(u.members) for u in units)
    assert len(assignment) == total
    for unit in units:
        assert len({assignment[m] for m in unit.members}) == 1, unit
    assert_ratios(counts(assignment), total, RATIOS, slack=12)  # within a few groups


def test_adding_units_never_moves_an_old_sample() -> None:
    old = singles(1000)
    first = assign_splits(old, RATIOS, 5, {})
    new = singles(200, "new")
    second = assign_splits(old + new, RATIOS, 5, first)
    assert {k: second[k] for k in first} == first
    assert_ratios(counts(second), 1200, RATIOS, slack=3)
    assert_ratios(counts(second, [u.members[0] for u in new]), 200, RATIOS, slack=3)


def test_stickiness_with_groups_and_removals() -> None:
    old = grouped_units(300)
    first = assign_splits(old, RATIOS, 2, {})
    survivors = old[50:]  # some units removed
    newcomers = grouped_units(100, "new")
    # a new copy joins an old group: it follows the group
    joined = SplitUnit((*survivors[0].members, sample_id(0, "joined")), survivors[0].stratum)
    second = assign_splits([joined, *survivors[1:], *newcomers], RATIOS, 2, first)
    for unit in survivors:
        for member in unit.members:
            assert second[member] == first[member]
    assert second[sample_id(0, "joined")] == first[survivors[0].members[0]]


def test_a_merged_group_takes_its_majority_split() -> None:
    ids = [sample_id(i) for i in range(4)]
    previous = {ids[0]: "val", ids[1]: "val", ids[2]: "train"}
    assignment = assign_splits([SplitUnit(tuple(ids), "")], RATIOS, 0, previous)
    assert assignment == dict.fromkeys(ids, "val")
    tie = assign_splits([SplitUnit(tuple(ids[:2]), "")], RATIOS, 0, {ids[0]: "test", ids[1]: "val"})
    assert set(tie.values()) == {"val"}  # ties go to the earlier split in train, val, test


# --- semantic versions ---------------------------------------------------------------------------


def state(label: str = "cat", split: str = "train", derived: str = "d0") -> SampleState:
    return SampleState(labels=label, split=split, derived=derived)


BEFORE = {"s1": state(), "s2": state("dog"), "s3": state(split="val")}


def test_first_version() -> None:
    change = decide(None, BEFORE, spec_changed=False)
    assert change is not None and change.bump == "major" and change.added == 3
    assert change.reasons == ["first version"]
    assert next_version(None, change.bump) == FIRST_VERSION == "1.0.0"


def test_nothing_changed() -> None:
    assert decide(BEFORE, dict(BEFORE), spec_changed=False) is None


def test_only_additions_are_minor() -> None:
    change = decide(BEFORE, {**BEFORE, "s4": state(), "s5": state("dog", "test")}, spec_changed=True)
    assert change is not None
    assert (change.bump, change.added, change.removed, change.relabeled, change.resplit) == (
        "minor",
        2,
        0,
        0,
        0,
    )
    assert change.reasons == ["2 samples added"]


def test_removal_is_major() -> None:
    after = {k: v for k, v in BEFORE.items() if k != "s2"}
    change = decide(BEFORE, after, spec_changed=False)
    assert change is not None and change.bump == "major" and change.removed == 1
    both = decide(BEFORE, {**after, "s9": state()}, spec_changed=False)
    assert both is not None and both.bump == "major" and (both.added, both.removed) == (1, 1)
    assert both.reasons == ["1 samples removed", "1 samples added"]


def test_relabel_is_major() -> None:
    change = decide(BEFORE, {**BEFORE, "s1": state("dog")}, spec_changed=False)
    assert change is not None and change.bump == "major" and change.relabeled == 1
    assert change.reasons == ["1 samples relabelled"]


def test_resplit_is_major() -> None:
    change = decide(BEFORE, {**BEFORE, "s3": state(split="test")}, spec_changed=False)
    assert change is not None and change.bump == "major" and change.resplit == 1
    assert change.reasons == ["1 samples moved between splits"]


def test_derived_only_is_patch() -> None:
    change = decide(
        BEFORE, {**BEFORE, "s1": state(derived="d1"), "s2": state("dog", derived="d1")}, spec_changed=False
    )
    assert change is not None and change.bump == "patch" and change.updated == 2
    assert change.reasons == ["derived metadata of 2 samples changed"]


def test_spec_only_is_patch() -> None:
    change = decide(BEFORE, dict(BEFORE), spec_changed=True)
    assert change is not None and change.bump == "patch" and change.updated == 0
    assert change.reasons == ["spec changed"]


def test_major_wins_over_everything_else() -> None:
    after = {"s1": state("dog", derived="d9"), "s2": state("dog"), "s4": state()}
    change = decide(BEFORE, after, spec_changed=True)
    assert change is not None and change.bump == "major"
    assert (change.added, change.removed, change.relabeled, change.updated) == (1, 1, 1, 1)


@pytest.mark.parametrize(
    ("parent", "bump", "expected"),
    [
        (None, "major", "1.0.0"),
        (None, "patch", "1.0.0"),
        ("1.0.0", "major", "2.0.0"),
        ("1.4.2", "major", "2.0.0"),
        ("1.4.2", "minor", "1.5.0"),
        ("1.4.2", "patch", "1.4.3"),
        ("1.9.9", "minor", "1.10.0"),
        ("9.0.0", "major", "10.0.0"),
    ],
)
def test_next_version(parent: str | None, bump: str, expected: str) -> None:
    assert next_version(parent, bump) == expected  # type: ignore[arg-type]


def test_version_order_is_numeric() -> None:
    versions = ["1.10.0", "1.2.0", "10.0.0", "2.0.0", "1.2.10", "1.2.9"]
    assert sorted(versions, key=version_key) == ["1.2.0", "1.2.9", "1.2.10", "1.10.0", "2.0.0", "10.0.0"]
