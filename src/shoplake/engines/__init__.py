"""Engines: adapters that run the declared SQL. `delta` is the only module that writes Delta tables."""
