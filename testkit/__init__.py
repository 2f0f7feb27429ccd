"""Helpers shared by the tests and the benchmarks: real clips (``clips``), private Redis servers
(``redis_server``), a served ``mofo serve`` process (``server``), bad clips (``badclips``),
dataset folders (``datasets``), synthetic clips with exact ground-truth boxes (``synthetic``) and
the reference implementations the product is checked and timed against (``attention``,
``loader``).

Development only: not part of the installed product. It may import the product (``mofo.*``),
never the tests or the benchmarks (tests/test_dev_layers.py)."""
