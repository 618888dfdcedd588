"""The probe (torch): gradient noise scale, memory cap and throughput measured on a user's model."""
