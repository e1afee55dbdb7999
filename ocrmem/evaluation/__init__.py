"""Evaluation: the conditions compared at one budget (conditions), the public runner that evaluate and
benchmark both call (runner), metrics with one definition each (scoring), and their reports.
"""
