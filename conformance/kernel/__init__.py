"""Rules about the kernel's side of FUSE: the reference server, mounted on /dev/fuse with
recording, is the probe; what the kernel sends it is judged (protocol.kernel_audit) and
counted under each cache mode."""
