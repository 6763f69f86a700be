"""The compiled kernels' integer codes (kernels/abi.pxd) agree with fusedense.abi and the registry."""
import pytest

from fusedense import abi
from fusedense.activations import BY_ID

kernels = pytest.importorskip("fusedense._kernels.activations",
                              reason="the cython kernels are not built (python setup.py build_ext --inplace)")


def test_compiled_activation_ids_match_the_registry():
    assert kernels.ABI["activations"] == [a.id for a in BY_ID]
    assert kernels.ABI["n_activations"] == len(BY_ID)


@pytest.mark.parametrize("name", [n for n in dir(abi) if n.startswith(("LOSS_", "OPT_", "H_", "N_HYPER"))
                                  and isinstance(getattr(abi, n), int)])
def test_compiled_abi_code_matches_fusedense_abi(name):
    assert kernels.ABI[name] == getattr(abi, name)


def test_every_python_abi_code_is_compiled():
    python_codes = {n for n in dir(abi) if n.startswith(("LOSS_", "OPT_", "H_", "N_HYPER"))
                    and isinstance(getattr(abi, n), int)}
    assert python_codes == set(kernels.ABI) - {"activations", "n_activations"}


def test_compiled_layer_struct_matches_the_record_dtype():
    """kernels/layer.pxd's Layer and fusedense.layout.LAYER: same size, same field offsets
    (the kernels read a record array's bytes as Layer structs)."""
    from fusedense.layout import LAYER
    layers = pytest.importorskip("fusedense._kernels.layers")
    size, offsets = layers.LAYER_STRUCT
    assert size == LAYER.itemsize
    assert offsets == {name: LAYER.fields[name][1] for name in LAYER.names}
