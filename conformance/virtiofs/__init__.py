"""vhost-user and virtio-fs rules: what a virtio-fs back-end owes its front-end and driver."""
