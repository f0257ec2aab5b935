"""POSIX rules through a mount: each operation runs on the target and on tmpfs of this kernel."""
