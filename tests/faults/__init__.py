"""Process-level and fault-injection tests of the core engine."""
