"""Command-line flags generated from config dataclasses, so names, defaults and help live in one place."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

#: Field names whose flag is spelled with hyphens (TF1: hyperparameters use underscores, everything else hyphens).
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def flag_name(field: dataclasses.Field) -> str:
    """``--latent_factors`` for hyperparameters; ``--train-file`` where the field sets ``metadata['flag']``."""
    return field.metadata.get("flag", "--" + field.name)


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


def _wt_type(text: str) -> int | str:
    value = text.strip().lower()
    return value if value in ("linear", "log") else int(value)


def add_flags(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """Adds one flag per field of dataclass ``cls``; defaults are ``argparse.SUPPRESS`` so that only flags given
    on the command line appear in the namespace (``--use-optimized`` and the like can then tell them apart)."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        default = field.default
        help_text = f"{field.metadata.get('help', '')} (default: {default!r})".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": help_text}
        if kind is bool or kind == "bool":
            # --headers / --no-headers, and --headers=false as Vertex tuning may pass it.
            kwargs.update(nargs="?", const=True, type=_bool, metavar="BOOL")
            group.add_argument(flag_name(field), **kwargs)
            group.add_argument(
                "--no-" + flag_name(field)[2:],
                dest=field.name,
                action="store_false",
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
            )
            continue
        if field.name == "wt_type":
            kwargs["type"] = _wt_type
        elif "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
            kwargs["type"] = str
        else:
            kwargs["type"] = _scalar_type(kind)
        group.add_argument(flag_name(field), *field.metadata.get("aliases", ()), **kwargs)


def _scalar_type(kind: Any):
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    base = args[0] if args else kind
    if base is int:
        return int
    if base is float:
        return float
    return str


def given(namespace: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` that were given on the command line."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(namespace).items() if k in names}


def to_argv(config: Any) -> list[str]:
    """Flags that reproduce ``config`` (the inverse of parsing; used for the round-trip test and job specs)."""
    argv = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is None:
            continue
        name = flag_name(field)
        if isinstance(value, bool):
            argv.append(name if value else "--no-" + name[2:])
        else:
            argv.append(f"{name}={value}")
    return argv
