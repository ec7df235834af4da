"""The data set, its split and fingerprints."""

import json

import numpy as np
import pytest

from serving.training import dataset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    dataset.write_splits(out)
    return out


def test_splits_are_disjoint_cover_everything_and_are_stratified(data_dir):
    frame = dataset.load_frame()
    splits = dataset.split_frame(frame)
    assert sum(len(s) for s in splits.values()) == len(frame) == 5000
    assert {n: len(s) for n, s in splits.items()} == {"train": 2500, "validation": 500, "test": 1250, "live": 750}
    # No customer row appears in two splits (rows are unique on all features in this data).
    keys = {n: set(map(tuple, s[list(dataset.FEATURES)].astype(str).to_numpy())) for n, s in splits.items()}
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not keys[a] & keys[b], f"{a} and {b} share rows"
    rates = [s[dataset.LABEL].mean() for s in splits.values()]
    assert max(rates) - min(rates) < 0.005


def test_split_is_fixed_by_seed_and_written_with_fingerprints(data_dir):
    manifest = json.loads((data_dir / "manifest.json").read_text())
    for name in dataset.SPLIT_FRACTIONS:
        assert dataset.fingerprint(dataset.read_split(data_dir, name)) == manifest["fingerprints"][name]
    assert (data_dir / "pristine" / "test.csv").exists() and not (data_dir / "test.csv").exists()
    other = dataset.split_frame(dataset.load_frame(), seed=1)
    assert dataset.fingerprint(other["test"]) != manifest["fingerprints"]["test"]


def test_existing_splits_are_never_silently_replaced(data_dir, tmp_path):
    assert dataset.write_splits(data_dir) == json.loads((data_dir / "manifest.json").read_text())["fingerprints"]
    with pytest.raises(RuntimeError, match="refusing to overwrite"):
        dataset.write_splits(data_dir, seed=7)


def test_columns_match_the_signature_types(data_dir):
    cols = dataset.to_columns(dataset.read_split(data_dir, "validation").head(3))
    assert cols["state"].dtype == object and isinstance(cols["state"][0], bytes)
    assert cols["total_day_minutes"].dtype == np.float32
    row = dataset.to_instances(dataset.read_split(data_dir, "validation").head(1))[0]
    assert set(row) == set(dataset.FEATURES) and isinstance(row["account_length"], float)
