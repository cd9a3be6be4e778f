"""Plain data: what a checker's observation may be, and its form on the way from the kernel that ran a
student's code to the grader's process that judges it.

`plain(value)` turns numbers, str, bytes, None, lists, tuples, dicts, sets, numpy arrays and torch tensors
(nested) into a tree of JSON values and numpy arrays of numbers; anything else (a model, a generator, an
object with its own `==`) raises `NotPlain`. `unplain(tree)` gives back lists, tuples, dicts, sets, arrays
and tensors (on the CPU, of the same dtype). `encode` / `decode` turn a tree into bytes and back without
pickle: decoding never runs code, whatever the bytes are. numpy and torch are imported when first needed.
"""

from __future__ import annotations

import io
import json

LIMIT = 1 << 30  # bytes: a larger message is refused


class NotPlain(TypeError):
    """A value that cannot cross to the grader as plain data."""


def plain(value, where: str = "the result"):
    """`value` as a tree of JSON values, its arrays as {"$": "array"|"tensor", "data": ndarray}."""
    kind = type(value)
    if value is None or kind in (bool, str):  # bool cannot be subclassed
        return value
    if isinstance(value, int):
        return {"$": "int", "text": str(int(value))} if abs(int(value)) >= 2**53 else int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray)):
        return {"$": "bytes", "hex": bytes(value).hex()}
    if isinstance(value, (list, tuple, set, frozenset)):
        name = "list" if isinstance(value, list) else "tuple" if isinstance(value, tuple) else "set"
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return {"$": name, "items": items}
    if isinstance(value, dict):
        pairs = [[plain(k, f"a key of {where}"), plain(v, f"{where}[{k!r}]")] for k, v in value.items()]
        return {"$": "dict", "items": pairs}
    module = kind.__module__.split(".")[0]
    if module == "numpy":
        import numpy as np

        if isinstance(value, np.generic):
            return plain(value.item(), where)
        if isinstance(value, np.ndarray):
            return {"$": "array", "data": _numeric(np.array(value, copy=True), where)}
    if module == "torch":
        import torch

        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu()
            data = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
            return {"$": "tensor", "dtype": str(tensor.dtype), "data": _numeric(data.copy(), where)}
        if isinstance(value, torch.Size):
            return plain(tuple(int(n) for n in value), where)
        if isinstance(value, torch.dtype):
            return {"$": "dtype", "name": str(value)}
    raise NotPlain(
        f"{where} is a {kind.__name__}, which the checker cannot take: return numbers, str, lists, tuples, "
        "dicts or tensors"
    )


def _numeric(array, where: str):
    if array.dtype.kind not in "biufc":
        raise NotPlain(f"{where} is an array of {array.dtype}, not of numbers")
    return array


def unplain(tree):
    """The values a tree stands for: lists, tuples, dicts, sets, numpy arrays, torch tensors."""
    if not isinstance(tree, dict):
        return tree
    kind = tree["$"]
    if kind in ("list", "tuple", "set"):
        items = [unplain(v) for v in tree["items"]]
        return {"list": list, "tuple": tuple, "set": set}[kind](items)
    if kind == "dict":
        return {unplain(k): unplain(v) for k, v in tree["items"]}
    if kind == "int":
        return int(tree["text"])
    if kind == "bytes":
        return bytes.fromhex(tree["hex"])
    if kind == "array":
        return tree["data"]
    if kind == "tensor":
        import torch

        dtype = getattr(torch, tree["dtype"].removeprefix("torch."))
        return torch.from_numpy(tree["data"].copy()).to(dtype)
    if kind == "dtype":
        import torch

        return getattr(torch, tree["name"].removeprefix("torch."))
    raise ValueError(f"not a plain-data tree: {kind!r}")


def encode(message) -> bytes:
    """A tree (and whatever JSON sits around it) as bytes: the JSON, its arrays in an .npz."""
    import numpy as np

    arrays = []

    def lift(node):
        if isinstance(node, dict):
            if node.get("$") in ("array", "tensor"):
                arrays.append(node["data"])
                return {**node, "data": len(arrays) - 1}
            return {k: lift(v) for k, v in node.items()}
        if isinstance(node, list):
            return [lift(v) for v in node]
        return node

    text = json.dumps(lift(message)).encode()
    buffer = io.BytesIO()
    np.savez(buffer, json=np.frombuffer(text, dtype=np.uint8), **{f"a{i}": a for i, a in enumerate(arrays)})
    return buffer.getvalue()


def _check_members(data: bytes) -> None:
    """Refuse, before anything is allocated, an archive that would unpack to more than it holds: a compressed
    member (`encode` never compresses; a deflated one can grow a thousandfold), members adding up to more than
    `LIMIT`, or an array whose header claims more bytes than its member holds."""
    import zipfile

    import numpy as np

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise ValueError(f"not a message of the grader's: {e}") from None
    left = LIMIT
    for info in archive.infolist():
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"member {info.filename!r} is compressed: the grader reads stored members only")
        if info.file_size > left:
            raise ValueError(f"member {info.filename!r} of {info.file_size} bytes: past the {LIMIT}-byte limit")
        left -= info.file_size
        with archive.open(info) as member:
            major, _ = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(member)
            need = dtype.itemsize * int(np.prod(shape, dtype=object))
            if dtype.hasobject or need > info.file_size:
                raise ValueError(
                    f"member {info.filename!r} claims {need} bytes of {dtype} in a member of {info.file_size} bytes"
                )


def decode(data: bytes):
    """What `encode` wrote; arrays are read without pickle, so bytes from anywhere are safe to decode."""
    import numpy as np

    if len(data) > LIMIT:
        raise ValueError(f"a message of {len(data)} bytes: more than the {LIMIT} the grader reads")
    _check_members(data)
    with np.load(io.BytesIO(data), allow_pickle=False) as found:
        message = json.loads(found["json"].tobytes().decode())
        arrays = {name: found[name] for name in found.files if name != "json"}

    def lower(node):
        if isinstance(node, dict):
            if node.get("$") in ("array", "tensor"):
                return {**node, "data": _numeric(arrays[f"a{int(node['data'])}"], "an array")}
            return {k: lower(v) for k, v in node.items()}
        if isinstance(node, list):
            return [lower(v) for v in node]
        return node

    return lower(message)
