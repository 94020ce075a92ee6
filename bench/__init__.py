"""Benchmarks of the production topology (`engine web` + `engine worker` on Postgres and Redis).

Not part of the test suite: run `python -m bench.run --help`.
"""
