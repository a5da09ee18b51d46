"""Checks ComfyUI runs when a prompt is queued, so a bad value is an HTTP 400 with node_errors
naming the input that is wrong, not a failure (or a silent NaN) at run time.

How this host files a queue-time error (execution.py `validate_inputs`, v0.3.64):

* its own checks go input by input and name that input: a number below `min` or above `max`
  (`value < min`, `value > max`), a value not among a combo's options when the combo's type
  is its list of options, a value that is not a number at all;
* a node's `validate_inputs` gets only the inputs its signature names, the host skips its own
  range checks for those, and whatever it returns (a message) is filed under *every* input
  its signature names, the same message each time. Raising files it under another node.

So each check here is made where it names the one input that is wrong: numbers by the host's own
range check (`Float` gives NaN a bound it fails too), options by the host's own list check
(`Choice`), and a node's `validate_inputs` names exactly one input, the one whose own rule the
host cannot check (a text, a file name, a folder). What needs two inputs (a rule between them, a
second text of a node, a path an earlier node of the same prompt may write) is checked first
thing when the node runs, before any model is touched, by a message naming the input to change.
Every text a node checks is text (plugin_core's `text_problem`), and every error a node raises is
one its host can log (`printable_errors`)."""

from __future__ import annotations

import functools
import math

from ..plugin_core import printable, shown, text_problem
from .api import io

MESSAGE_CHARACTERS = 2000  # the longest error message a node sends the host
NAME_BYTES = 255  # the longest file name the usual file systems take


class Bound(float):
    """A `min` or `max` that NaN lies outside of. The host checks `value < min` and `value > max`,
    both false for NaN; Python asks a float subclass's reflected comparison first, so with this
    bound the host's own check refuses NaN, under the input's name. It is a plain float to JSON
    (`/object_info`) and everywhere else."""

    def __gt__(self, other):
        return _is_nan(other) or float.__gt__(self, other)

    def __lt__(self, other):
        return _is_nan(other) or float.__lt__(self, other)

    __hash__ = float.__hash__


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def Float(id: str, *, min: float, max: float, **options) -> io.Float.Input:
    """io.Float.Input whose range the host checks itself, NaN included."""
    return io.Float.Input(id, min=Bound(min), max=Bound(max), **options)


class Choice(io.Combo.Input):
    """A combo whose type is its list of options (the classic form of a combo), so the host
    checks a queued value against them itself and names the input; a V3 combo's type is the
    word COMBO, which the host does not check."""

    def get_io_type(self):
        return list(self.options)


def choice_problem(node_class, name: str, value) -> str | None:
    """Why a queued value is not one of a V3 combo's options (a combo whose type is the word COMBO,
    which the host does not check), for the one input a node's own `validate_inputs` names; the
    value is escaped in the message, where the host's own check would log it as it is. None when
    fine or a link (None, checked when the node runs)."""
    options = next(i for i in node_class.define_schema().inputs if i.id == name).options
    if value is None or value in options:
        return None
    listed = ", ".join(map(str, options[:10])) + (" ..." if len(options) > 10 else "") if options else "none found"
    return f"{name} '{shown(value)}' is not available; choose one of: {listed}"


def name_problem(name: str, value) -> str | None:
    """A file name the pack saves under (a plugin, a selector, a run folder): one plain name, which
    keeps the file inside the pack's folder; None when fine or a link."""
    if not isinstance(value, str):
        return None
    if problem := text_problem(name, value):
        return problem
    stem = value.strip().removesuffix(".safetensors")
    if stem and (not stem.strip(".") or any(c in stem for c in "/\\:")):
        return f"{name} '{shown(value)}' is not a plain file name (one without '/', '\\', ':', not only dots)"
    if len(f"{stem}.safetensors".encode()) > NAME_BYTES:
        return f"{name} is {len(stem):,} characters long: a file name of at most {NAME_BYTES - 12} bytes, please"
    return None


def plain_name(name: str, value: str, default: str) -> str:
    """The name to save under (the rule of `name_problem`, raised), '.safetensors' dropped; an
    empty name gives `default`."""
    if problem := name_problem(name, value):
        raise ValueError(problem)
    return value.strip().removesuffix(".safetensors") or default


def printable_errors(node_class):
    """Every error a node raises reaches ComfyUI as text its log writer takes: the host logs an
    error's message as it is, and a message quoting a user's text that is not valid Unicode (a
    lone surrogate) stopped its prompt worker for good. Such a message, or one too long to read,
    is raised again as a ValueError with that text escaped and cut; any other error (the host's
    own interrupt among them) passes unchanged."""
    execute = node_class.__dict__["execute"].__func__

    @functools.wraps(execute)
    def guarded(cls, *args, **kwargs):
        try:
            return execute(cls, *args, **kwargs)
        except Exception as error:
            message = str(error)
            if printable(message, MESSAGE_CHARACTERS) == message:
                raise
            raise ValueError(printable(message, MESSAGE_CHARACTERS)) from None

    node_class.execute = classmethod(guarded)
    return node_class
