"""The independent reference implementations the other tests use for expected values
(``reference`` fixture, tests/conftest.py) agree with the official golden vectors."""

import pytest
from metrics_oracle import load_arrays, load_cases

ISBI = load_cases("isbi")
SEG = load_cases("seg")


@pytest.mark.parametrize("name", sorted(ISBI))
def test_reference_pixel_and_rand_errors_are_the_official_ones(name, reference):
    folder, case = ISBI[name]
    arrays = load_arrays(folder, name)
    assert reference.pixel_error(arrays["labels"], arrays["proposal"]) == pytest.approx(
        case["expected"]["pixel_error"], abs=1e-9)
    assert reference.rand_error(arrays["labels"], arrays["proposal"]) == pytest.approx(
        case["expected"]["rand_error"], abs=1e-9)


@pytest.mark.parametrize("name", sorted(SEG))
def test_reference_seg_is_the_official_one(name, reference):
    folder, case = SEG[name]
    arrays = load_arrays(folder, name)
    assert reference.seg(arrays["gt"], arrays["res"]) == pytest.approx(case["expected_seg"], abs=1e-9)
