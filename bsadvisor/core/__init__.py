"""Pure math and files: schedules, temperature, conversion, plans, probe results, statistics.

Nothing in ``bsadvisor.core`` imports torch (a test checks it), so ``convert-schedule``
and every command's option checks start instantly.
"""
