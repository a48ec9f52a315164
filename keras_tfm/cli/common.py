"""Flag types and helpers every subcommand shares."""

import argparse
import dataclasses


def positive_int(text):
    """argparse type: an int >= 1, else a one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer, got {value}"
        )
    return value


def non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") \
            from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def comma_list(text):
    """`"a, b,"` -> `["a", "b"]`."""
    return [part.strip() for part in text.split(",") if part.strip()]


def describe(help, default=None, choices=None):
    """`help` with its default and choices, as every flag shows them."""
    extras = []
    if default not in (None, "", ()):
        extras.append(f"default: {default}")
    if choices:
        extras.append(f"choices: {', '.join(map(str, choices))}")
    return f"{help} ({'; '.join(extras)})" if extras else help


def add_config_flags(parser, config_class, skip=()):
    """One flag per config field, named after it, with the field's help,
    default and choices. Flags default to `None` (meaning "not given"), so
    that a preset or config file can supply the value instead. The class's
    own fields come first (data and task), then the shared ones."""
    own = set(getattr(config_class, "__annotations__", {}))
    fields = sorted(dataclasses.fields(config_class),
                    key=lambda f: f.name not in own)
    for field in fields:
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        help = describe(
            field.metadata.get("help", ""),
            field.default,
            field.metadata.get("choices"),
        )
        if field.type is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None,
                help=help,
            )
        else:
            parser.add_argument(
                flag, type=field.type, default=None,
                metavar=field.name.upper(), help=help,
            )
