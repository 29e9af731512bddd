"""Command-line flags generated from config dataclasses, so a field has one flag everywhere.

`add_config` adds one ``--flag`` per field of a dataclass (``batch_size`` -> ``--batch-size``;
a nested dataclass field becomes a group of flags under its own prefix, ``lora.rank`` ->
``--lora-rank``), with the field's type, its default and the help line from the class
docstring's ``Attributes:`` section. `from_args` builds the dataclass back from the parsed
namespace. `TrainConfig` fields are the same flags in ``sweep``, ``gradex`` and ``s2l``::

    add_config(parser, TrainConfig, skip=("steps",))
    config = from_args(args, TrainConfig, skip=("steps",), steps=400)
"""

import argparse
import dataclasses
import re
import types
import typing

# Nested dataclass fields and the prefix of their flags: SweepConfig.train's fields are the
# plain training flags (--lr), SweepConfig.lora's are --lora-*.
NESTED_PREFIX = {"train": "", "lora": "lora-"}


def _docs(cls) -> dict[str, str]:
    """Field name -> first sentence of its entry in the docstring's ``Attributes:`` section."""
    doc = cls.__doc__ or ""
    if "Attributes:" not in doc:
        return {}
    out, name = {}, None
    for line in doc.split("Attributes:", 1)[1].splitlines():
        m = re.match(r"\s{4,8}([\w, ]+):\s*(.*)", line)
        if m and not line.startswith(" " * 12):
            names = [n.strip() for n in m.group(1).split(",")]
            for name in names:
                out[name] = m.group(2).strip()
        elif name is not None and line.strip():
            for n in names:
                out[n] += " " + line.strip()
        elif not line.strip() and out:
            name = None
    first = {k: re.split(r"(?<=[a-z)`])\. (?=[A-Z`(])", v)[0].rstrip(".") for k, v in out.items()}
    return {k: v.replace("%", "%%") for k, v in first.items()}


def _parser_for(tp):
    """(argparse type callable, metavar) of an annotation; Optional accepts ``none``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner, meta = _parser_for(next(a for a in args if a is not type(None)))

        def optional(text: str):
            return None if text.lower() in ("none", "off") else inner(text)

        return optional, meta
    if origin is tuple:
        item = args[0]

        def items(text: str):
            try:
                values = tuple(item(v) for v in text.split(",") if v.strip())
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected comma-separated {item.__name__} values, got {text!r}"
                ) from None
            if not values:
                raise argparse.ArgumentTypeError("no values given")
            return values

        return items, f"{item.__name__.upper()},..."
    return tp, None


def _flag(prefix: str, name: str) -> str:
    return "--" + (prefix + name).replace("_", "-")


def _dest(prefix: str, name: str) -> str:
    return (prefix + name).replace("-", "_")


def add_config(
    parser: argparse.ArgumentParser,
    cls,
    *,
    prefix: str = "",
    skip: tuple[str, ...] = (),
    defaults: dict | None = None,
    required: tuple[str, ...] = (),
    title: str | None = None,
) -> None:
    """Add a flag for every field of the dataclass ``cls`` (nested dataclasses recursively).

    Args:
        parser: where the flags go (in an argument group named after the class).
        cls: the config dataclass.
        prefix: prepended to every flag (``"ft-"`` gives ``--ft-lr``).
        skip: field names (``"lora.rank"`` for nested ones) that get no flag.
        defaults: field name -> default, overriding the dataclass default for this command.
        required: fields with no default to add as required flags.
        title: argument-group title (default: the class name).
    """
    defaults = defaults or {}
    hints = typing.get_type_hints(cls)
    docs = _docs(cls)
    group = parser.add_argument_group(title or cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            sub = f"{f.name}."
            add_config(
                parser,
                hints[f.name],
                prefix=prefix + NESTED_PREFIX.get(f.name, f.name + "-"),
                skip=tuple(s[len(sub) :] for s in skip if s.startswith(sub)),
                defaults={k[len(sub) :]: v for k, v in defaults.items() if k.startswith(sub)},
            )
            continue
        if f.name in defaults:
            default = defaults[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default, required = None, (*required, f.name)
        kind, metavar = _parser_for(hints[f.name])
        help_ = docs.get(f.name, "")
        if hints[f.name] is bool:
            group.add_argument(
                _flag(prefix, f.name),
                dest=_dest(prefix, f.name),
                action=argparse.BooleanOptionalAction,
                default=default,
                help=help_,
            )
            continue
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        group.add_argument(
            _flag(prefix, f.name),
            dest=_dest(prefix, f.name),
            type=kind,
            metavar=metavar,
            default=default,
            required=f.name in required,
            help=f"{help_} (default: {shown})" if f.name not in required else help_,
        )


def from_args(args: argparse.Namespace, cls, *, prefix: str = "", skip=(), **fixed):
    """The ``cls`` instance of the flags `add_config` added; ``fixed`` fields win."""
    hints = typing.get_type_hints(cls)
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name in fixed:
            kw[f.name] = fixed[f.name]
        elif f.name in skip:
            continue
        elif dataclasses.is_dataclass(hints[f.name]):
            sub = f"{f.name}."
            kw[f.name] = from_args(
                args,
                hints[f.name],
                prefix=prefix + NESTED_PREFIX.get(f.name, f.name + "-"),
                skip=tuple(s[len(sub) :] for s in skip if s.startswith(sub)),
                **{k[len(sub) :]: v for k, v in fixed.items() if k.startswith(sub)},
            )
        else:
            kw[f.name] = getattr(args, _dest(prefix, f.name))
    return cls(**kw)
