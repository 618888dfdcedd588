"""Following a plan in training (torch): sampler, scheduler, train step, training loop, validation."""
