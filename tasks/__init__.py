"""Prefect tasks: thin, named wrappers over the kubetrain library (function name = UI name)."""
