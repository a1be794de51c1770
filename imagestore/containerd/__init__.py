"""containerd's image store read offline: the second source beside moby's classic store.

Docker 29 keeps images here on a fresh install (namespace ``moby``), and so does every
Kubernetes node (``k8s.io``). This package reads the root as it lies on disk, without a
daemon and without writing: ``layout`` finds the files, ``decode`` reads containerd's value
encodings, ``meta`` reads ``meta.db`` consistently beside a live containerd, ``snapshotter``
its snapshotters' ``metadata.db``, ``content`` the blobs and their JSON, and ``images``
resolves a namespace into images as Docker 29's image service (moby daemon/containerd)
sees them.
"""
