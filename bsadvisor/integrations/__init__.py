"""Adapters that let other training frameworks follow a plan (``lightning``: PyTorch Lightning).

Each module imports its framework when it is imported itself, and nothing in bsadvisor
imports one at import time: ``import bsadvisor`` never needs Lightning
(``from bsadvisor import FollowPlan`` does).
"""
