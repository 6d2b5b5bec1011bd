"""Every use of an upstream library's internals, one module per workaround.

Each module's header says the symptom, the upstream version it was written against and when it can go;
each has a canary test (tests/test_compat.py, or the test file named after the workaround) that fails when the
upstream behaviour it relies on changes.
"""
