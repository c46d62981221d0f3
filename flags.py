"""Command-line flags made from a settings dataclass, so that each default and its help are
written once, on the field (``metadata["help"]``, plus argparse extras such as ``metavar``,
``choices`` or ``action``), and the parsed arguments build the dataclass by keyword."""

from __future__ import annotations

import dataclasses
from pathlib import Path

_TYPES = {"int": int, "float": float, "str": str, "Path": Path}


def path_arg(value: str) -> Path:
    """A path flag's value, ``~`` expanded."""
    return Path(value).expanduser()


def int_list(value: str) -> tuple[int, ...]:
    """A flag of comma-separated whole numbers (``5,10,25``)."""
    import argparse

    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def name_list(value: str, choices, what: str) -> tuple[str, ...]:
    """A flag of comma-separated names, each one of ``choices``, or an :class:`IplapError` naming the
    first that is not (``what``: the flag, e.g. ``--backends``)."""
    from .errors import IplapError

    names = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [n for n in names if n not in choices]
    if unknown or not names:
        raise IplapError(f"unknown {what} {unknown[0] if unknown else value!r}: choose from {', '.join(choices)}")
    return names


def setting(default, help: str, **flag):
    """A dataclass field that is a flag, with its help (and argparse extras such as
    ``metavar``, ``choices`` or ``action``)."""
    return dataclasses.field(default=default, metadata={"help": help, **flag})


def _type_of(annotation: str):
    """The argparse type of a field annotated ``int``, ``float``, ``str``, ``Path``, ``X | None``
    or ``tuple[X, ...]`` (annotations are strings under ``from __future__ import annotations``)."""
    name = annotation.replace(" ", "").replace("|None", "").replace("typing.", "")
    if name.startswith("tuple["):
        name = name[len("tuple["):].split(",")[0]
    return _TYPES.get(name, str)


def add_flags(parser, settings, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag-name`` per field of the dataclass ``settings`` (``bundle`` -> ``--bundle``)."""
    for f in dataclasses.fields(settings):
        if f.name in skip or "help" not in f.metadata:
            continue
        extra = {k: v for k, v in f.metadata.items() if k not in ("help", "required")}
        kwargs = {"dest": f.name, "help": f.metadata["help"]}
        if f.metadata.get("required"):
            kwargs["required"] = True
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if default not in (None, ()):
                kwargs["help"] += f" (default {default:g})" if isinstance(default, float) else f" (default {default})"
            kwargs["default"] = None if extra.get("action") == "append" else default
        if extra.get("action") not in ("store_true", "store_false"):
            kwargs["type"] = _type_of(str(f.type))
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs, **extra)


def settings_from(args, settings, **given):
    """The dataclass ``settings`` built by keyword from parsed ``args`` (fields ``add_flags``
    made), and ``given`` values for the others."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(settings) if hasattr(args, f.name)}
    values = {k: v for k, v in values.items() if v is not None}
    return settings(**values, **given)


__all__ = ["add_flags", "int_list", "name_list", "path_arg", "setting", "settings_from"]
