"""Ids checked against their pattern, and the keys built from them (planzoom.ids, planzoom.keys)."""

from __future__ import annotations

import pytest

from planzoom import keys
from planzoom.ids import InvalidId, check_id, new_job_id
from planzoom.v1 import jobs_pb2


@pytest.mark.parametrize("value", ["a", "Org-1", "plan_2024", "x" * 64, new_job_id()])
def test_valid_ids(value):
    assert check_id("org", value) == value


@pytest.mark.parametrize(
    "value", ["", "a/b", "..", "../etc", "a.b", "-lead", "_lead", "a b", "a\x00b", "é", "x" * 65,
              "a\nb", "a\\b"],
)
def test_invalid_ids(value):
    with pytest.raises(InvalidId):
        check_id("org", value)


def test_keys_refuse_bad_ids():
    with pytest.raises(InvalidId):
        keys.dzi_key(jobs_pb2.PlanRef(org="o", project="..", plan="p"), new_job_id(), 1)
    plan = jobs_pb2.PlanRef(org="o", project="p", plan="l")
    assert keys.dzi_key(plan, "j1", 3) == "tiles/o/p/l/j1/page-3.dzi"
    assert keys.page_files_prefix(plan, "j1", 3) == "tiles/o/p/l/j1/page-3_files/"
    assert keys.current_key(plan) == "tiles/o/p/l/current.json"


def test_job_ids_sort_by_time():
    a = new_job_id()
    b = new_job_id()
    assert len(a) == 22 and a[:12] <= b[:12]
