"""vitals: core, the ground floor (settings, errors, crypto, logging, metrics).

Imports nothing of ours but schemas.
"""
