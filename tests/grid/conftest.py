"""The contract's shared tests (``tests/grid/contract.py``) get pytest's assertion messages."""

import pytest

pytest.register_assert_rewrite("tests.grid.contract")
