"""A tool's JSON Schema from its type hints, and the argument check that goes with it."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Callable, Literal, Union, get_args, get_origin

_SIMPLE: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    bytes: "string",
    list: "array",
    tuple: "array",
    dict: "object",
}


def type_schema(t: Any) -> dict[str, Any]:
    """JSON Schema of one annotation (``str``, ``int | None``, ``list[str]``, ``Literal``…)."""
    if t is inspect.Parameter.empty or t is Any or t is object:
        return {}
    origin = get_origin(t)
    if origin is Union or (hasattr(types, "UnionType") and isinstance(t, types.UnionType)):
        args = [a for a in get_args(t) if a is not type(None)]
        if len(args) == 1:
            return type_schema(args[0])
        return {"anyOf": [type_schema(a) for a in args]}
    if origin is Literal:
        return {"enum": list(get_args(t))}
    if origin in (list, tuple, set, frozenset) or t in (list, tuple):
        args = get_args(t)
        s: dict[str, Any] = {"type": "array"}
        if args and args[0] is not Ellipsis:
            s["items"] = type_schema(args[0])
        return s
    if origin is dict or t is dict:
        s = {"type": "object"}
        args = get_args(t)
        if len(args) == 2:
            s["additionalProperties"] = type_schema(args[1])
        return s
    if typing.is_typeddict(t):
        hints = typing.get_type_hints(t)
        req = getattr(t, "__required_keys__", set(hints))
        return {
            "type": "object",
            "properties": {k: type_schema(v) for k, v in hints.items()},
            "required": sorted(req),
        }
    if t in _SIMPLE:
        return {"type": _SIMPLE[t]}
    return {}


class Signature:
    """What a tool function takes: its parameters, schema and the context parameter."""

    def __init__(self, fn: Callable[..., Any], context_type: type) -> None:
        sig = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn)
        except Exception:
            hints = {}
        self.context_param: str | None = None
        self.params: dict[str, inspect.Parameter] = {}
        self.required: list[str] = []
        self.types: dict[str, Any] = {}
        self.var_kw = False
        props: dict[str, Any] = {}
        for name, p in sig.parameters.items():
            ann = hints.get(name, p.annotation)
            if ann is context_type or (self.context_param is None and name == "ctx"):
                self.context_param = name
                continue
            if p.kind is p.VAR_KEYWORD:
                self.var_kw = True
                continue
            if p.kind is p.VAR_POSITIONAL:
                continue
            self.params[name] = p
            self.types[name] = ann
            s = type_schema(ann)
            if p.default is not p.empty and p.default is not None:
                s = dict(s, default=p.default)
            props[name] = s
            if p.default is p.empty:
                self.required.append(name)
        self.schema: dict[str, Any] = {"type": "object", "properties": props}
        if self.required:
            self.schema["required"] = self.required
        if not self.var_kw:
            self.schema["additionalProperties"] = False

    def bind(self, args: Any) -> dict[str, Any]:
        """Checks INVOKE ``args`` against the parameters; raises ``ValueError`` with what is
        wrong (the server answers INVALID_ARGUMENTS)."""
        if args is None:
            args = {}
        if not isinstance(args, dict):
            if len(self.params) == 1:
                # A tool of one parameter may be given that value directly.
                args = {next(iter(self.params)): args}
            else:
                raise ValueError("arguments must be a map of parameter names to values")
        for k in args:
            if not isinstance(k, str):
                raise ValueError("argument names must be strings")
            if k not in self.params and not self.var_kw:
                raise ValueError(f"unexpected argument `{k}`")
        for name in self.required:
            if name not in args:
                raise ValueError(f"missing argument `{name}`")
        for name, v in args.items():
            t = self.types.get(name)
            if t is not None and not _matches(v, t):
                raise ValueError(f"argument `{name}` should be {_describe(t)}, got {type(v).__name__}")
        return args


def _matches(v: Any, t: Any) -> bool:
    # The common hints first, without `get_origin` (this runs for every argument of every call).
    if t is str:
        return isinstance(v, str)
    if t is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if t is inspect.Parameter.empty or t is Any or t is object:
        return True
    origin = get_origin(t)
    if origin is Union or (hasattr(types, "UnionType") and isinstance(t, types.UnionType)):
        return any(_matches(v, a) for a in get_args(t))
    if t is type(None):
        return v is None
    if origin is Literal:
        return v in get_args(t)
    if t is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if t in (str, bool, bytes):
        return isinstance(v, t)
    if origin in (list, tuple, set, frozenset) or t in (list, tuple):
        if not isinstance(v, list):
            return False
        args = get_args(t)
        return not args or args[0] is Ellipsis or all(_matches(x, args[0]) for x in v)
    if origin is dict or t is dict or typing.is_typeddict(t):
        return isinstance(v, dict)
    return True  # a type we do not check: the tool sees the value as sent


def _describe(t: Any) -> str:
    return type_schema(t).get("type", str(t))
