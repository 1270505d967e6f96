"""Typed settings read from the environment: the bottom layer, imports no app."""
