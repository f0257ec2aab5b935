"""POSIX ACL rules through a mount: ACLs written as ``system.posix_acl_*`` xattrs, access decided
as other users, everything compared with tmpfs of the same kernel (CONFIG_TMPFS_POSIX_ACL)."""
