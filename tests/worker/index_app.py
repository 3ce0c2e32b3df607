"""Index a v2 Functions app with the Python language worker's own loader, as the host asks it to.

Runs under the worker's interpreter (``.tools/worker``: azure-functions-runtime, Python 3.13), not the
app's: ``python index_app.py <app directory> [script file]``. Prints one JSON object per function with
what the worker tells the host: raw bindings, binding infos, retry options, and the binding it chose to
decode each parameter with (``generic`` for ``str``/``bytes``). Any load error is printed and exits 1.

The host normally hands the worker its protobuf module; the few message types the indexing path builds
are stood in for by plain records carrying the same fields and enum values (``BindingInfo.Direction``:
in 0, out 1, inout 2; ``BindingInfo.DataType``: undefined 0, string 1, binary 2, stream 3).
"""
import json
import os
import sys
import traceback
from datetime import timedelta


class _Message:
    def __init__(self, **fields):
        self.__dict__.update(fields)


class BindingInfo(_Message):
    undefined, string, binary, stream = 0, 1, 2, 3
    out, inout = 1, 2


setattr(BindingInfo, "in", 0)


class Protos:
    BindingInfo = BindingInfo
    RpcFunctionMetadata = _Message
    RpcRetryOptions = _Message


def _plain(value):
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, _Message):
        return {key: _plain(item) for key, item in vars(value).items()}
    return value


def _type_name(pytype) -> str:
    return getattr(pytype, "__name__", str(pytype))


def main(app_dir: str, script: str = "function_app.py") -> int:
    os.chdir(app_dir)
    sys.path.insert(0, app_dir)
    from azure_functions_runtime import loader
    from azure_functions_runtime.bindings import meta
    from azure_functions_runtime.functions import Registry

    try:
        meta.load_binding_registry()
        registry = Registry()
        indexed = loader.index_function_app(os.path.join(app_dir, script))
        results, _ = loader.process_indexed_function(Protos, registry, indexed, app_dir)
    except Exception as error:  # FunctionLoadError, ImportError, ...: the host would find 0 functions
        traceback.print_exc()
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
        return 1
    for result in results:
        info = registry.get_function(result.function_id)
        print(json.dumps({
            "name": result.name,
            "raw_bindings": [json.loads(raw) for raw in result.raw_bindings],
            "bindings": {name: _plain(binding) for name, binding in result.bindings.items()},
            "retry": _plain(result.retry_options),
            "inputs": {name: {"binding": typed.binding_name, "type": _type_name(typed.pytype)}
                       for name, typed in info.input_types.items()},
            "return": info.return_type.binding_name if info.return_type else None,
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
