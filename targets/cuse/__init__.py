"""CUSE servers, driven in the kernel's role through a stand-in /dev/cuse."""
