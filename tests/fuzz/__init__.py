"""Property-based fuzzing of every reader of untrusted input; refusals must be one line.

The ``ci`` hypothesis profile (tests/conftest.py) keeps the set reproducible and near half
a minute; ``HYPOTHESIS_PROFILE=thorough pytest tests/fuzz`` explores far more examples.
"""
