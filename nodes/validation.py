"""Checks ComfyUI runs when a prompt is queued (a node's `validate_inputs`), so a bad value is
an HTTP 400 with node_errors, not a failure (or a silent NaN) at run time.

This host checks neither the options of V3 combo inputs nor non-finite numbers (NaN passes both
`< min` and `> max`), and it skips its own min/max checks for every input a `validate_inputs`
names; `check_inputs` does all of them from the node's own schema."""

from __future__ import annotations

import math


def check_inputs(node_class, **values):
    """True, or a message naming each value that is not one of its combo's options, not finite,
    or outside its input's range. A None value is a link, checked when the node runs."""
    inputs = {i.id: i for i in node_class.define_schema().inputs}
    problems = []
    for name, value in values.items():
        spec = inputs[name]
        options = getattr(spec, "options", None)
        if value is None:
            continue
        if options is not None:
            if value not in options:
                shown = ", ".join(map(str, options[:10])) + (" ..." if len(options) > 10 else "") if options else "none found"
                problems.append(f"{name} '{value}' is not available; choose one of: {shown}")
            continue
        low, high = getattr(spec, "min", None), getattr(spec, "max", None)
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{name} must be a finite number, got {value}")
        elif low is not None and value < low:
            problems.append(f"{name} must be at least {low}, got {value}")
        elif high is not None and value > high:
            problems.append(f"{name} must be at most {high}, got {value}")
        elif isinstance(value, int) and getattr(spec, "step", None) and (value - (low or 0)) % spec.step:
            problems.append(f"{name} must be a multiple of {spec.step}, got {value}")
    return True if not problems else "; ".join(problems)
