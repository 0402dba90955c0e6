"""An optional feature whose packages are missing says which pip extra installs them."""

import pytest

from tlkit.errors import UserError, require


def test_require_names_the_extra() -> None:
    with pytest.raises(UserError, match=r"pip install 'tlkit\[export\]'"):
        require(("json", "no_such_module_tlkit"), "export", "ONNX export")
    require(("json",), "export", "ONNX export")  # installed: no error
