"""CUSE rules: a character device's server, spoken to in the kernel's role."""
