"""One declaration per setting: its command-line flag, help, kind and range. The settings
objects (RestoreSettings, TrainConfig) check their values with it, the command line parses with
it and the nodes take their defaults and ranges from the same objects, so a rule about a value
lives in one place. Pure Python: the command line parses without importing torch."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from .errors import PluginError


class Invalid(str):
    """A command-line value that failed its check: the message, kept until every argument has been
    read, so that all mistakes are reported together."""


@dataclass(frozen=True)
class Option:
    flag: str  # "--steps"
    help: str
    kind: type = int  # int, float, str or bool (a switch)
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is not allowed
    multiple: int | None = None  # of the VAE's factor, for sizes
    choices: tuple | None = None
    metavar: str | None = None

    def problem(self, value: Any) -> str | None:
        """Why `value` is not allowed, or None."""
        if self.choices is not None:
            return None if value in self.choices else f"must be one of {', '.join(map(str, self.choices))}, got {value!r}"
        if self.kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"must be a number, got {value!r}"
        if self.kind is int and not float(value).is_integer():
            return f"must be a whole number, got {value!r}"
        if self.kind is float and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return (f"must lie in ({self.low}, {self.high}], got {value}" if self.low_open and self.high is not None
                    else f"must be {'above' if self.low_open else 'at least'} {self.low}, got {value}")
        if self.high is not None and value > self.high:
            return f"must be at most {self.high}, got {value}"
        if self.multiple and value % self.multiple:
            return (f"must be a multiple of {self.multiple} (the VAE's factor), got {value}; "
                    f"e.g. {value - value % self.multiple or self.multiple}")
        return None

    def parse(self, text: str):
        """The command-line text as a checked value, or an `Invalid` message naming the flag."""
        if self.kind in (int, float):
            try:
                value = int(text) if self.kind is int else float(text)
            except ValueError:
                return Invalid(f"{self.flag}: {text!r} is not a {'whole number' if self.kind is int else 'number'}")
        else:
            value = text
        problem = self.problem(value)
        return Invalid(f"{self.flag}: {problem}") if problem else value


def check_settings(settings, options: dict[str, Option]) -> None:
    """Raise one PluginError naming every field of a settings dataclass that breaks its option."""
    problems = []
    for item in fields(settings):
        option = options.get(item.name)
        value = getattr(settings, item.name)
        if option is not None and option.kind is not bool and value is not None:
            problem = option.problem(value)
            if problem:
                problems.append(f"{option.flag.lstrip('-').replace('-', '_')} {problem}")
    if problems:
        raise PluginError("; ".join(problems))


def add_options(parser, options: dict[str, Option], defaults: dict[str, Any]) -> dict:
    """Each option as a command-line argument (`dest` its name) with its default; their argparse
    actions by name."""
    actions = {}
    for name, option in options.items():
        default = defaults[name]
        if option.kind is bool:  # a switch: "--cache" turns a False default on, "--no-crop" a True one off
            actions[name] = parser.add_argument(option.flag, dest=name, action="store_false" if default else "store_true",
                                                help=option.help)
        else:
            metavar = option.metavar or (None if option.choices is None else "{" + ",".join(map(str, option.choices)) + "}")
            actions[name] = parser.add_argument(option.flag, dest=name, type=option.parse, default=default, help=option.help,
                                                metavar=metavar)
    return actions


SHOWN_CHARACTERS = 120  # of a user's text quoted back in a message


def printable(text, limit: int | None = None) -> str:
    """Text any log writer or JSON encoder takes: what is not valid Unicode (a file name's bytes
    that are not UTF-8, held by Python as lone surrogates) written as escapes ('\\udcff'). Such
    text, passed to the log as it is, raises inside ComfyUI's log writer. With `limit`, at most
    that many characters, then how many more there were."""
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    if limit is not None and len(text) > limit:
        return f"{text[:limit]}... ({len(text) - limit:,} more characters)"
    return text


def shown(text) -> str:
    """A user's text as a message quotes it: printable, control characters escaped, and short."""
    escaped = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in printable(text))
    return printable(escaped, SHOWN_CHARACTERS)


def text_problem(name: str, value, *, multiline: bool = False) -> str | None:
    """A text that is not text: a lone surrogate (JSON's "\\ud800" escapes decode to one), which no
    tokenizer or file system takes, or a control character (NUL, escape sequences; line breaks and
    tabs only in a multi-line text). None when fine or a link (None)."""
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        bad = value[error.start]
        return (f"{name} holds a character that is not text (a lone surrogate U+{ord(bad):04X} at position {error.start}): "
                f"retype it")
    allowed = "\n\r\t" if multiline else ""
    for position, character in enumerate(value):
        if (ord(character) < 32 or 0x7F <= ord(character) < 0xA0) and character not in allowed:
            return (f"{name} holds a control character (U+{ord(character):04X} at position {position}), which no text here "
                    f"may hold: retype it")
    return None
