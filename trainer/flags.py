"""Command-line flags generated from config dataclasses, so names, defaults and help live in one place."""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from typing import Any

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
#: A help text that states its default: "default" followed by a value ("(TF1 default 5)", "(default: --job-dir)").
_STATES_DEFAULT = re.compile(r"\bdefault:?\s+[^\s)]", re.IGNORECASE)


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
    if value in ("linear", "log"):
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 0 or 'log' (power law), 1 or 'linear', got {text!r}") from None


def help_text(field: dataclasses.Field, default: Any = dataclasses.MISSING) -> str:
    """The field's help with its default, ``(default: 20)``, unless the help states the default itself (``TF1
    default 5``, ``default: --job-dir``) or the default is None (unset: the help says what happens then).

    ``default`` replaces the field's own where a command uses another (``tuning.search``'s validation fraction).
    """
    text = field.metadata.get("help", "")
    value = field.default if default is dataclasses.MISSING else default
    if value is None or _STATES_DEFAULT.search(text):
        return text
    return f"{text} (default: {value!r})"


def add_flags(parser: argparse.ArgumentParser, cls: type, title: str, defaults: dict[str, Any] | None = None) -> None:
    """Adds one flag per field of dataclass ``cls``; defaults are ``argparse.SUPPRESS`` so that only flags given
    on the command line appear in the namespace (``--use-optimized`` and the like can then tell them apart).

    ``defaults`` (field name -> value) are the defaults the command applies instead of the fields' own; they only
    change the help text (the command applies them itself, so that it can still tell given flags apart).
    """
    defaults = defaults or {}
    unknown = sorted(set(defaults) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"`defaults` names fields that {cls.__name__} lacks: {unknown}")
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        text = help_text(field, defaults.get(field.name, dataclasses.MISSING)).replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": text}
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
