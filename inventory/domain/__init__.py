"""Pure domain: value types, events, aggregates and inventory maths.

Modules in this package import only the standard library (a test reads their imports).
"""
