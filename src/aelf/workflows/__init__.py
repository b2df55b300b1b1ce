"""Workflows on finished runs: evaluation, attention, reproduction of the paper.

They import the core, never the apps.
"""
