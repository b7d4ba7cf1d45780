"""BYOL (JAX/Haiku, dill pickle) weights -> torchvision ResNet-50, mapped by name.

The published file (``pretrain_res50x1.pkl``) is what BYOL's ``byol/utils/checkpointing.py``
(``Checkpointer.maybe_save_checkpoint``) writes: ``dill.dump(dict(experiment_state=...,
step=..., rng=...), file, protocol=2)``. ``experiment_state`` is the ``_ByolExperimentState``
NamedTuple of ``byol/byol_experiment.py``, whose fields are, in this order, ``online_params,
target_params, online_state, target_state, opt_state`` (``BYOL_STATE_FIELDS``); params and
state are Haiku mappings ``module_path -> {name: ndarray}``.

Loading that with plain pickle/dill would import haiku and jax and would call whatever the file
names. ``RestrictedUnpickler`` rebuilds numpy arrays and plain containers and nothing else.
How each part of such a file pickles, and what the unpickler makes of it:

- ndarrays: dill wraps every array as ``dill._dill._create_array(_reconstruct, args, state,
  None)``; plain pickle uses ``numpy.core.multiarray._reconstruct`` (numpy 1) or
  ``numpy._core.multiarray._reconstruct`` (numpy 2) plus BUILD. Protocol 2 stores the raw
  bytes as ``_codecs.encode(latin1_text, "latin1")``. All of these are allow-listed (arrays
  of Python objects and object scalars are refused).
- jax arrays: the 2020 ``DeviceArray`` forwarded ``__reduce__`` to its numpy value, so it
  pickled as a plain ndarray; jax >= 0.4 pickles ``jax._src.array._reconstruct_array(fun,
  args, arr_state, aval_state)``, rebuilt here as a numpy array.
- namedtuples: an instance is ``copyreg.__newobj__(cls, *fields)``, which protocol 2 writes as
  the NEWOBJ opcode (``cls.__new__(cls, *fields)``). dill (0.3 to 0.4) pickles a namedtuple
  *class* by value as ``dill._dill._create_namedtuple(name, fields, module)``; the unpickler
  builds a fresh namedtuple from those names without importing ``module``, so the fields are
  read by name. Plain pickle names the class by reference instead; it becomes an inert
  stand-in whose ``__new__`` returns the fields as a tuple, read in BYOL's field order.
- Haiku mappings: current haiku (0.0.17 here) returns plain dicts; its ``FlatMap`` reduces
  to ``haiku._src.data_structures.FlatMapping(plain_dict)`` and the 2020 ``frozendict`` to
  ``frozendict(plain_dict)``. The 2020 ``FlatMapping`` held a PyTreeDef, which could not be
  pickled (dm-haiku issue #31), so a 2020 file that holds one must have reduced it through
  a plain mapping too (not verified against a 2020 release). Any such class becomes a
  stand-in that, called with one mapping, returns a dict (an object pickled with a state
  instead stays opaque, and conversion fails naming it).
- Anything else from outside the standard library (optax/BYOL optimiser states, ...) becomes
  an inert stand-in; names from the standard library (``os``, ``posix``, ``subprocess``,
  ``builtins.eval``/``exec``/``getattr`` ...), from dill, numpy or torch that are not on the
  allow-list are refused with ``RefusedGlobalError``.
"""

from __future__ import annotations

import _compat_pickle
import builtins
import collections
import pickle
import sys
import zipfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtransfer.weights.backbones import backbone_keys, check_state_dict
from medtransfer.weights.base import Converted, Probe, UnsafePickleError, sample_keys
from medtransfer.writers import write_bytes

# Field order of `_ByolExperimentState` in deepmind/byol, byol/byol_experiment.py (a
# typing.NamedTuple declared in exactly this order); used when a file names the class by
# reference, so only positions are known.
BYOL_STATE_FIELDS = ("online_params", "target_params", "online_state", "target_state", "opt_state")
ENCODER = "res_net50"  # Haiku's module name for BYOL's `networks.ResNet50`

_STEM = {"conv1": "initial_conv", "bn1": "initial_batchnorm"}
_BLOCK_LAYERS = {
    "conv1": "conv_0", "bn1": "batchnorm_0", "conv2": "conv_1", "bn2": "batchnorm_1",
    "conv3": "conv_2", "bn3": "batchnorm_2",
    "downsample.0": "shortcut_conv", "downsample.1": "shortcut_batchnorm",
}
# torchvision BatchNorm tensor -> (checkpoint field, name under the Haiku module).
_BN_SOURCES = {
    "weight": ("online_params", "scale"),
    "bias": ("online_params", "offset"),
    "running_mean": ("online_state", "~/mean_ema/average"),
    "running_var": ("online_state", "~/var_ema/average"),
}
_HEADS = {
    "projector": "BYOL projector MLP (training head)",
    "predictor": "BYOL predictor MLP (training head)",
    "classifier": "BYOL online linear classifier (replaced by the evaluation head)",
}
_DROPPED_FIELDS = {
    "target_params": "BYOL target network (EMA copy); features come from the online network",
    "target_state": "BYOL target network BatchNorm statistics",
    "opt_state": "LARS optimiser state",
    "step": "training step counter",
    "rng": "training random-number state",
}
_EMA_BOOKKEEPING = (
    "Haiku BatchNorm EMA bookkeeping (hidden/counter); `average` is the running statistic"
)
# write_native keeps BYOL's head *layout* but not its size (4096 / 256 / 1000 in BYOL), so
# demo files stay small; the heads are dropped on conversion anyway.
DEMO_HEAD_SIZES = {"hidden": 64, "output": 32, "classes": 10}


class RefusedGlobalError(UnsafePickleError):
    """The pickle names a callable that could run code; nothing was executed."""


def _refuse(what: str) -> RefusedGlobalError:
    return RefusedGlobalError(
        f"refusing to load {what} from this pickle: a BYOL weights file needs only numpy "
        "arrays and plain containers, and this could run code. Do not open the file with "
        "pickle or dill; download it again from the published URL and check its sha256."
    )


# --- allow-listed globals: numpy's own array rebuilding, re-checked ---------------------

def _numpy_multiarray(name: str) -> Any:
    # numpy 2 moved numpy.core to numpy._core; files written with either must load.
    try:
        from numpy._core import multiarray  # numpy 2's home of a pickle's globals
    except ImportError:  # numpy 1
        from numpy.core import multiarray  # numpy 1's home of them
    return getattr(multiarray, name)


_NP_RECONSTRUCT = _numpy_multiarray("_reconstruct")
_NP_SCALAR = _numpy_multiarray("scalar")


def _latin1_bytes(text: object, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol 2 uses it: bytes stored as latin-1 text."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
        raise _refuse(f"_codecs.encode({type(text).__name__}, {encoding!r}) (only latin-1 text)")
    return text.encode("latin-1")


def _numpy_scalar(dtype: object, data: object = None) -> np.generic:
    """numpy's ``scalar``: numeric scalars from raw bytes (object scalars refused)."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise _refuse(f"a numpy scalar of dtype {dtype!r} (only numeric scalars)")
    return _NP_SCALAR(dtype, data)


def _rebuild_array(fun: object, args: tuple, state: tuple) -> np.ndarray:
    """numpy's own ``__reduce__`` replayed, but only with numpy's ``_reconstruct``."""
    if fun is not _NP_RECONSTRUCT:
        raise _refuse(f"an array rebuilt by {fun!r} (only numpy's _reconstruct)")
    array = fun(*args)
    array.__setstate__(state)
    if array.dtype.hasobject:
        # Object arrays are not weights and would carry arbitrary Python objects.
        raise _refuse(f"an array of dtype {array.dtype} (only numeric arrays)")
    return array


def _dill_array(fun: object, args: tuple, state: tuple, npdict: object = None) -> np.ndarray:
    """dill's ``_create_array``; ``npdict`` (attributes of ndarray subclasses) is not needed."""
    return _rebuild_array(fun, args, state)


def _jax_array(fun: object, args: tuple, arr_state: tuple, aval_state: object = None) -> np.ndarray:
    """jax's ``_reconstruct_array``, returning the numpy value instead of a device array."""
    return _rebuild_array(fun, args, arr_state)


def _record_type(name: object, fieldnames: object, modulename: object, defaults: object = None) -> type:
    """dill's ``_create_namedtuple`` without importing ``modulename``: a fresh namedtuple."""
    names = [name, *fieldnames] if isinstance(fieldnames, (tuple, list)) else [None]
    if not all(isinstance(n, str) and n.isidentifier() for n in names):
        raise _refuse(f"a namedtuple named {name!r} with fields {fieldnames!r}")
    return collections.namedtuple(name, fieldnames, defaults=defaults, module=str(modulename))


def _plain_dict(default_factory: object = None) -> dict:
    """``collections.defaultdict`` without its factory (a callable we do not keep)."""
    return {}


_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int",
             "float", "complex", "bool", "slice")
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    **{("builtins", name): getattr(builtins, name) for name in _BUILTINS},
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): _plain_dict,
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _NP_RECONSTRUCT for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _numpy_scalar for core in ("core", "_core")},
    **{(f"dill.{mod}", "_create_array"): _dill_array for mod in ("_dill", "dill")},
    **{(f"dill.{mod}", "_create_namedtuple"): _record_type for mod in ("_dill", "dill")},
    ("jax._src.array", "_reconstruct_array"): _jax_array,
}
# Third-party packages whose unknown names are refused rather than stood in for: they hold
# functions that load files or build code (dill._dill._create_function, numpy.load, ...).
_REFUSED_PACKAGES = frozenset({"dill", "numpy", "torch", "cloudpickle", "joblib", "__builtin__"})


# --- stand-ins for classes we do not import -----------------------------------------------

class StandIn:
    """An inert placeholder for a class or function that the pickle names but we never import.

    Called with one mapping (how Haiku's FlatMapping/frozendict reduce) it returns a plain dict;
    with other arguments (a namedtuple named by reference, via NEWOBJ) a tuple of them; with
    none (an ordinary object, whose state follows) an instance that only stores that state.
    """

    source = "?"

    def __new__(cls, *args: Any) -> Any:
        if len(args) == 1 and isinstance(args[0], Mapping):
            return dict(args[0])
        if args:
            return tuple(args)
        return super().__new__(cls)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<stand-in for {self.source}>"


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles BYOL/Haiku weight files without jax, haiku or BYOL's code and runs nothing else.

    See the module docstring for what each global becomes. Persistent ids are refused.
    """

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self._stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles name Python 3 modules by their Python 2 names (`__builtin__.eval`,
        # `commands.check_call` for subprocess): map them back first, as pickle itself does.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        safe = _SAFE_GLOBALS.get((module, name))
        if safe is not None:
            return safe
        top = module.partition(".")[0]
        if top in sys.stdlib_module_names or top in _REFUSED_PACKAGES:
            raise _refuse(f"the global {module}.{name}")
        if (module, name) not in self._stand_ins:
            label = name.replace(".", "_") if name.replace(".", "_").isidentifier() else "Unknown"
            self._stand_ins[(module, name)] = type(
                label, (StandIn,), {"source": f"{module}.{name}", "__module__": __name__}
            )
        return self._stand_ins[(module, name)]

    def persistent_load(self, pid: Any) -> Any:
        raise _refuse(f"a persistent id {pid!r}")


def read_native(path: Path) -> Any:
    """Unpickle a BYOL weights file with ``RestrictedUnpickler`` (raw nested containers)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BYOL weights file {path} not found")
    if zipfile.is_zipfile(path):
        raise ValueError(f"{path}: a zip archive (what torch.save and the SimCLR release write), not BYOL's "
                         "dill pickle; check the `format` given for this file")
    try:
        with open(path, "rb") as handle:
            return RestrictedUnpickler(handle).load()
    except RefusedGlobalError as err:
        raise RefusedGlobalError(f"{path}: {err}") from None
    except Exception as err:  # nothing foreign runs in the unpickler: any failure is the file's
        raise ValueError(
            f"{path}: cannot read this as a BYOL weights file (a dill pickle, protocol 2): "
            f"{type(err).__name__}: {str(err)[:300]}. The file may be truncated or corrupt: "
            "delete it and download it again, or check its `format`."
        ) from err


# --- names: torchvision <-> BYOL ----------------------------------------------------------

def _haiku_module(module: str) -> str:
    """'layer2.0.downsample.1' -> 'res_net50/~/block_group_1/~/block_0/~/shortcut_batchnorm'."""
    if module in _STEM:
        return f"{ENCODER}/~/{_STEM[module]}"
    layer, block, name = module.split(".", 2)
    group = int(layer.removeprefix("layer")) - 1
    return f"{ENCODER}/~/block_group_{group}/~/block_{block}/~/{_BLOCK_LAYERS[name]}"


@cache
def _sources() -> dict[str, str]:
    """torchvision key -> BYOL source key ('<field>/<haiku module>/<name>'), batch counters aside."""
    table = {}
    for key in backbone_keys("resnet50"):
        module, _, param = key.rpartition(".")
        if param == "num_batches_tracked":
            continue  # Haiku has no counterpart; added as 0 so strict loading works
        is_conv = module.rpartition(".")[2].startswith("conv") or module.endswith("downsample.0")
        field, name = ("online_params", "w") if is_conv else _BN_SOURCES[param]
        table[key] = f"{field}/{_haiku_module(module)}/{name}"
    return table


def _describe(obj: object) -> str:
    if isinstance(obj, Mapping):
        return f"a mapping with keys {sorted(map(str, obj))[:10]}"
    return f"a {type(obj).__name__}"


def _experiment_fields(obj: object, path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The fields of ``experiment_state`` by name, and the top-level entries dropped."""
    if not isinstance(obj, Mapping) or "experiment_state" not in obj:
        raise ValueError(
            f"{path}: not a BYOL weights file: expected a dict with 'experiment_state', 'step' "
            f"and 'rng' (the layout BYOL's checkpointing.py writes), found {_describe(obj)}. "
            "Check the `format` given for this file."
        )
    state = obj["experiment_state"]
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        fields = dict(zip(state._fields, state))
    elif isinstance(state, Mapping):
        fields = dict(state)
    elif isinstance(state, tuple) and len(state) == len(BYOL_STATE_FIELDS):
        fields = dict(zip(BYOL_STATE_FIELDS, state))
    else:
        fields = {}
    if "online_params" not in fields or "online_state" not in fields:
        raise ValueError(
            f"{path}: not a BYOL weights file: 'experiment_state' should be BYOL's "
            f"_ByolExperimentState {BYOL_STATE_FIELDS}, found {_describe(state)}."
        )
    extra = {**{k: v for k, v in obj.items() if k != "experiment_state"}, **fields}
    dropped = {
        str(k): _DROPPED_FIELDS.get(str(k), "not part of the online network")
        for k in extra if k not in ("online_params", "online_state")
    }
    return fields, dropped


def _flatten(tree: object, field: str, path: Path) -> dict[str, Any]:
    """Haiku ``module -> {name: value}`` as ``'<field>/<module>/<name>' -> value``."""
    if not isinstance(tree, Mapping):
        raise ValueError(f"{path}: {field} is {_describe(tree)}, expected a Haiku mapping "
                         "module_path -> {name: array}")
    flat = {}
    for module, values in tree.items():
        if not isinstance(values, Mapping):
            raise ValueError(f"{path}: {field}/{module} is {_describe(values)}, expected a "
                             "mapping name -> array")
        flat.update({f"{field}/{module}/{name}": value for name, value in values.items()})
    return flat


def _drop_reason(source: str) -> str | None:
    module = source.partition("/")[2]
    if module.partition("/")[0] in _HEADS:
        return _HEADS[module.partition("/")[0]]
    if module.startswith(f"{ENCODER}/") and source.rpartition("_ema/")[2] in ("hidden", "counter"):
        return _EMA_BOOKKEEPING
    return None


def _to_torch(source: str, value: object, path: Path) -> torch.Tensor:
    """HWIO conv kernels -> OIHW; BatchNorm (1, 1, 1, C) -> (C,); always float32."""
    if not isinstance(value, (np.ndarray, np.generic)) or value.dtype.kind != "f":
        raise ValueError(f"{path}: {source} is {_describe(value)} "
                         f"(dtype {getattr(value, 'dtype', None)}), expected a float array")
    array = np.asarray(value)
    array = array.transpose(3, 2, 0, 1) if source.endswith("/w") and array.ndim == 4 else array.reshape(-1)
    return torch.from_numpy(np.array(array, dtype=np.float32, order="C"))


def _map_sources(sources: dict[str, Any], path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Pick the backbone tensors by name; list every other source key as dropped (or fail)."""
    wanted = {source: key for key, source in _sources().items()}
    state_dict, dropped, unexpected = {}, {}, []
    for source, value in sources.items():
        if source in wanted:
            state_dict[wanted[source]] = _to_torch(source, value, path)
        elif (reason := _drop_reason(source)) is not None:
            dropped[source] = reason
        else:
            unexpected.append(source)
    missing = sorted(set(wanted) - set(sources))
    if missing or unexpected:
        raise ValueError(
            f"{path}: does not hold BYOL's ResNet-50 (x1) online network. missing "
            f"({len(missing)}): {missing[:20]}; unexpected ({len(unexpected)}): "
            f"{sorted(unexpected)[:20]}. Is this a BYOL ResNet-50 x1 file and its `format` right?"
        )
    return state_dict, dropped


def convert(path: Path) -> Converted:
    """Map a BYOL file's online ResNet-50 onto torchvision names (to be built with padding
    ``tf_same``, as the format's record says).

    Every source entry that is not a backbone tensor is listed in ``dropped`` with its reason;
    every backbone key and shape is checked, so the result loads strictly.
    """
    path = Path(path)
    fields, dropped = _experiment_fields(read_native(path), path)
    sources = {**_flatten(fields["online_params"], "online_params", path),
               **_flatten(fields["online_state"], "online_state", path)}
    state_dict, head_dropped = _map_sources(sources, path)
    dropped.update(head_dropped)
    for key in backbone_keys("resnet50"):
        if key.endswith("num_batches_tracked"):
            state_dict[key] = torch.zeros((), dtype=torch.int64)
    check_state_dict(state_dict, "resnet50", str(path))
    return Converted(state_dict=state_dict, dropped=dropped)


# --- the inverse: torchvision -> a file in BYOL's published layout -------------------------

# BYOL's class, rebuilt by name: dill pickles any namedtuple class by value
# (`_create_namedtuple(name, fields, module)`), so this writes the same bytes for the class
# as BYOL's own `_ByolExperimentState` and needs neither BYOL's code nor a sys.modules entry.
_ByolExperimentState = collections.namedtuple(
    "_ByolExperimentState", BYOL_STATE_FIELDS, module="byol.byol_experiment"
)


def _to_haiku(source: str, tensor: torch.Tensor) -> np.ndarray:
    """OIHW conv kernels -> HWIO; BatchNorm (C,) -> (1, 1, 1, C), as Haiku stores them."""
    array = tensor.detach().cpu().to(torch.float32).numpy()
    array = array.transpose(2, 3, 1, 0) if source.endswith("/w") else array.reshape(1, 1, 1, -1)
    return np.ascontiguousarray(array)


def _ema(average: np.ndarray, step: int) -> dict[str, np.ndarray]:
    # `hidden` shares the array: the pickle memo then stores it once.
    return {"average": average, "hidden": average, "counter": np.asarray(step, np.int32)}


def _backbone_trees(state_dict: dict[str, torch.Tensor], step: int) -> tuple[dict, dict]:
    """Haiku ``params`` and ``state`` trees of the ResNet-50 encoder."""
    params: dict[str, dict[str, np.ndarray]] = {}
    state: dict[str, dict[str, np.ndarray]] = {}
    for key, source in _sources().items():
        field, _, rest = source.partition("/")
        module, _, name = rest.rpartition("/")
        array = _to_haiku(source, state_dict[key])
        if field == "online_params":
            params.setdefault(module, {})[name] = array
        else:
            state[module] = _ema(array, step)
    return params, state


def _classifier(state_dict: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """BYOL's linear classifier on the 2048-d embedding: torchvision's ``fc`` if given."""
    if "fc.weight" not in state_dict:
        classes = DEMO_HEAD_SIZES["classes"]
        return {"w": np.zeros((2048, classes), np.float32), "b": np.zeros(classes, np.float32)}
    weight = state_dict["fc.weight"].detach().cpu().to(torch.float32)
    bias = state_dict.get("fc.bias", torch.zeros(weight.shape[0])).detach().cpu().to(torch.float32)
    return {"w": np.ascontiguousarray(weight.numpy().T), "b": bias.numpy()}  # Haiku: (in, out)


def _head_trees(step: int) -> tuple[dict, dict]:
    """BYOL's projector and predictor MLPs (zeros, at ``DEMO_HEAD_SIZES``)."""
    hidden, out = DEMO_HEAD_SIZES["hidden"], DEMO_HEAD_SIZES["output"]
    zeros = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731 - a local shorthand
    params, state = {}, {}
    for mlp, size_in in (("projector", 2048), ("predictor", out)):
        params[f"{mlp}/~/linear"] = {"w": zeros(size_in, hidden), "b": zeros(hidden)}
        params[f"{mlp}/~/batch_norm"] = {"scale": zeros(1, hidden) + 1, "offset": zeros(1, hidden)}
        params[f"{mlp}/~/linear_1"] = {"w": zeros(hidden, out)}
        state[f"{mlp}/~/batch_norm/~/mean_ema"] = _ema(zeros(1, hidden), step)
        state[f"{mlp}/~/batch_norm/~/var_ema"] = _ema(zeros(1, hidden) + 1, step)
    return params, state


def write_native(state_dict: dict[str, torch.Tensor], path: Path, *, step: int = 0) -> None:
    """Write ResNet-50 weights (torchvision names) as a file in BYOL's published layout.

    The inverse of ``convert``: a dill pickle (protocol 2, like BYOL's checkpointing.py) of
    ``{"experiment_state": _ByolExperimentState(...), "step", "rng"}`` with plain-dict Haiku
    trees (what current haiku uses), EMA state with ``average``/``hidden``/``counter``, and
    projector/predictor/classifier heads so the drop logic has something to drop. A
    torchvision ``fc``, if present, becomes BYOL's ``classifier``. The target network shares
    the online arrays (the pickle stores them once) and ``opt_state`` is empty. Written
    atomically.
    """
    import dill  # a declared dependency, needed only to write

    backbone = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    check_state_dict(backbone, "resnet50", f"write_native({path})")
    params, state = _backbone_trees(backbone, step)
    head_params, head_state = _head_trees(step)
    params.update(head_params, classifier=_classifier(state_dict))
    state.update(head_state)
    experiment_state = _ByolExperimentState(
        online_params=params, target_params=params, online_state=state, target_state=state,
        opt_state=(),
    )
    payload = {"experiment_state": experiment_state, "step": int(step),
               "rng": np.array([0, step], dtype=np.uint32)}
    write_bytes(path, dill.dumps(payload, protocol=2))


def write_demo(state_dict: dict[str, torch.Tensor], out: Path, seed: int) -> None:
    """Demo weights in BYOL's published layout (``seed`` is not needed: the file is exact)."""
    write_native(state_dict, out)


def detect(probe: Probe) -> dict[str, Any] | None:
    """A protocol-2 pickle whose first key is ``experiment_state`` (what BYOL's checkpointing
    writes; torch's legacy files start with a magic number instead)."""
    if not probe.head.startswith(b"\x80\x02") or b"experiment_state" not in probe.head:
        return None
    info: dict[str, Any] = {"container": "dill pickle (protocol 2)"}
    try:
        fields, _ = _experiment_fields(read_native(probe.path), probe.path)
        keys = sorted(_flatten(fields["online_params"], "online_params", probe.path))
    except UnsafePickleError:
        raise  # never summarised away: inspect must say the file was refused
    except ValueError as err:
        return info | {"error": str(err)[:300]}
    return info | {"fields": sorted(fields), "count": len(keys), "keys": sample_keys(keys)}
