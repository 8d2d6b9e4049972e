"""Pure-Python core shared by the dispatcher and the tenant Workers.

Importable under CPython and Pyodide alike: no `js`, no I/O except through the
protocols defined here (see `shared.outbound_http`).
"""
