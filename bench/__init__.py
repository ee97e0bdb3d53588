"""vxtun's benchmarks: ``python -m bench.run`` (vxtun against the kernel's vxlan, side by side)
and ``bench/test_micro.py`` (pytest-benchmark microbenchmarks of the hot functions)."""
