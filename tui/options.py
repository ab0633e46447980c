"""Command-line options made from a settings dataclass (``sgdwalk run``'s from ``RunConfig``).

Why: ``RunConfig`` is the one place a run setting is declared (``sgdwalk.config.setting``: type,
default, help, the words of its "[default: ...]", the parser of a value given as text), so a new
setting is a new field there and an option of ``sgdwalk run`` with no other change. Every option
defaults to None (unset), so that ``build_config`` layers a preset and a config file under the
flags actually given; the default a user gets is said in the help instead. A bool is a flag
(``--download``), a bool that may be None (the model's or dataset's own default) a pair
(``--batchnorm/--no-batchnorm``); a parsed value is taken as text.

Typer reads a command's parameters from ``inspect.signature``, which honours ``__signature__``:
``takes_settings`` sets one with an ``Annotated[..., typer.Option(...)]`` per field.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

Command = TypeVar("Command", bound=Callable[..., Any])
KEYWORD = inspect.Parameter.KEYWORD_ONLY


def help_text(f: dataclasses.Field[Any]) -> str:
    """The field's help, with "[default: ...]" unless its default is None or a bool."""
    shown = f.metadata.get("shown", _default_text(f))
    return f.metadata["help"] if shown is None else f"{f.metadata['help']} [default: {shown}]"


def _default_text(f: dataclasses.Field[Any]) -> str | None:
    value = f.metadata.get("text", _same)(f.default)  # the canonical text a session stores
    if value is None or value == "" or isinstance(value, bool):
        return None
    return f"{value:g}" if isinstance(value, float) else str(value)


def _same(value: Any) -> Any:
    return value


def _flags(f: dataclasses.Field[Any], value_type: Any) -> tuple[str, ...]:
    """``--name`` for a bool that is off unless given; ``--name/--no-name`` for one that may be
    None or on; no declaration (Typer names it from the field) for a value."""
    if value_type is not bool:
        return ()
    flag = f.name.replace("_", "-")
    return (f"--{flag}",) if f.default is False else (f"--{flag}/--no-{flag}",)


def _value_type(f: dataclasses.Field[Any], hint: Any, as_text: bool = False) -> Any:
    """What the command line takes: text for a parsed setting (a list of them for one given
    several times), else the field's type less None; ``as_text``: text for all but a flag."""
    if f.metadata.get("many"):
        return list[str]
    kinds = [t for t in typing.get_args(hint) if t is not type(None)]
    kind = kinds[0] if len(kinds) == 1 else hint
    if "parse" in f.metadata or (as_text and kind is not bool):
        return str
    return kind


def option(settings: type, name: str) -> Any:
    """The ``typer.Option`` of one field of ``settings``."""
    (f,) = [f for f in dataclasses.fields(settings) if f.name == name]
    return _option(f, typing.get_type_hints(settings)[name])


def _option(f: dataclasses.Field[Any], hint: Any, helps: dict[str, str] | None = None) -> Any:
    words = (helps or {}).get(f.name, help_text(f))
    metavar = "<str>" if f.metadata.get("many") else None  # repeated: each is text
    return typer.Option(*_flags(f, _value_type(f, hint)), help=words, metavar=metavar)


def parameters(
    settings: type, as_text: bool = False, helps: dict[str, str] | None = None
) -> list[inspect.Parameter]:
    """One keyword parameter per field of ``settings``: an option that defaults to None
    (``as_text``, ``helps``: see ``takes_settings``)."""
    hints = typing.get_type_hints(settings)
    return [
        inspect.Parameter(f.name, KEYWORD, default=None,
                          annotation=Annotated[_value_type(f, hints[f.name], as_text) | None,
                                               _option(f, hints[f.name], helps)])
        for f in dataclasses.fields(settings)
    ]  # fmt: skip


def takes_settings(
    settings: type, as_text: bool = False, helps: dict[str, str] | None = None
) -> Callable[[Command], Command]:
    """Give a command that takes ``**settings`` one option per field of ``settings``, listed
    before the command's own options; it is called with every field (None where not given).
    ``as_text``: every value is taken as text (``sweep``'s "0.1,0.5" lists); ``helps``: other
    words for some options' help."""

    def give(command: Command) -> Command:
        own = inspect.signature(command, eval_str=True).parameters.values()
        kept = [p.replace(kind=KEYWORD) for p in own if p.kind is not p.VAR_KEYWORD]
        made = parameters(settings, as_text, helps)
        command.__signature__ = inspect.Signature([*made, *kept])  # type: ignore
        return command

    return give
