"""vhost-user and virtio-fs, sans-IO: the vhost-user messages (``messages``), the split
virtqueue and guest memory (``virtqueue``), and their numbers (``constants``)."""
