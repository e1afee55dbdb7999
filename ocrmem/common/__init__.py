"""Helpers every layer uses: errors a user can fix (errors), atomic file output (io), fault hooks for the
kill tests (faults), counters (stats) and WandB tracking (tracking). Imports nothing else of ocrmem.
"""
