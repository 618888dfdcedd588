"""What bsadvisor trains and probes: the Target contract, loading one from a file, built-in examples."""
