"""Argument types that refuse bad values while the command line is parsed, before anything
loads: argparse then prints one message and exits with 2."""

from __future__ import annotations

import argparse
import math

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def int_between(low: int, high: int):
    def parse(text: str) -> int:
        value = int_at_least(low)(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    parse.__name__ = f"integer in [{low}, {high}]"
    return parse


def multiple_of(step: int, low: int):
    def parse(text: str) -> int:
        value = int_at_least(low)(text)
        if value % step:
            raise argparse.ArgumentTypeError(f"must be a multiple of {step} (the VAE's factor), got {value}; e.g. {value - value % step or step}")
        return value

    parse.__name__ = f"multiple of {step}"
    return parse


def finite_float(low: float = -math.inf, high: float = math.inf, low_open: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < low or (low_open and value == low) or value > high:
            raise argparse.ArgumentTypeError(f"must lie in {'(' if low_open else '['}{low}, {high}], got {value}")
        return value

    parse.__name__ = "number"
    return parse


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def device(text: str) -> str:
    """A torch device this machine has."""
    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device (cpu, cuda, cuda:1, mps)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, but no GPU is visible"
            raise argparse.ArgumentTypeError(f"no CUDA GPU here (torch {torch.__version__} is {build}); use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError("no Apple GPU (mps) here; use --device cpu")
    return text
