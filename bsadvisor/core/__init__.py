"""Pure math and files: schedules, temperature, conversion (options, convert), plans, probe
results, statistics, memory search, prediction from a probe, the recommendation, exports.

Nothing in ``bsadvisor.core`` imports torch (a test checks it), so ``convert-schedule``
and every command's option checks start instantly.
"""
