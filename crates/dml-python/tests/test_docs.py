"""The examples in the package's docstrings run and print what they say."""

import doctest

import pytest

import dml
from dml import _accuracy, _evaluate, _knn, _miners, _sampler


@pytest.mark.parametrize("module", [_accuracy, _evaluate, _knn, _miners, _sampler], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_public_names_are_documented():
    for name in dml.__all__:
        obj = getattr(dml, name)
        if callable(obj):
            assert obj.__doc__ and len(obj.__doc__) > 80, name
