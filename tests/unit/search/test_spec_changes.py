"""A study reused by name (`study create --skip-if-exists`, a quickstart rerun) is compared with the spec
given: the stored spec read back equals the one stored, so only a real change is reported."""

from __future__ import annotations

import pytest

from aeopt.config import load_study_spec
from aeopt.search.quickstart import quickstart_spec
from aeopt.search.storage import open_storage
from aeopt.search.studies import changes_text, create_study, load_study, spec_changes

SHIPPED = ["conv_ae", "denoising_ae", "vae", "aae", "seed_grid", "classifier"]


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_spec_read_back_from_its_study_has_no_changes(name, tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    spec = load_study_spec(name)
    create_study(storage, spec, "other-name")  # the stored spec carries the study's name: not a change
    _, stored = load_study(storage, "other-name")
    assert spec_changes(stored, spec) == []


def test_the_quickstart_spec_read_back_has_no_changes(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    create_study(storage, quickstart_spec("fashion_mnist", 5000, 8), "quickstart")
    _, stored = load_study(storage, "quickstart")
    assert spec_changes(stored, quickstart_spec("fashion_mnist", 5000, 8)) == []


def test_changes_name_the_fields_in_the_specs_order():
    stored = quickstart_spec("fashion_mnist", 5000, 8)
    given = quickstart_spec("digits", None, 2)
    changes = spec_changes(stored, given)
    assert changes == [("data.dataset", "fashion_mnist", "digits"), ("data.train_subset", 5000, None),
                       ("budget.max_epochs", 8, 2)]
    assert changes_text(changes, limit=2) == ("data.dataset: fashion_mnist stored, digits given; "
                                              "data.train_subset: 5000 stored, null given; 1 more")
