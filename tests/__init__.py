"""The test suite; `tests.random_models` and `tests.comfy_support` are shared with the benchmarks."""
