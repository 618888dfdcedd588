"""Following a plan in training (torch): sampler, scheduler, train step, training loop, validation, and a
target's conversion options (recipe.py: options_for_target, for advise and validate)."""
