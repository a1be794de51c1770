"""The image service: what a daemon does with its image store (moby daemon/images, one
layer above image/), offline. ``delete`` and ``prune`` take images out as the daemon does,
``listing``, ``inspect`` and ``selection`` answer as its API does, ``check`` is fsck, and
``models`` is the Docker SDK for Python's ``client.images`` over all of it; ``host.Host``
is the store ``imagestore.open`` hands out, with ``images`` on it."""
