"""virtio-fs through vhost-user: our front-end (``frontend``), FUSE over its queues
(``channel``), and Debian's virtiofsd as a target (``virtiofsd``)."""
