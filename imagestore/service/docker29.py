"""What Docker Engine 29.7.2 answers at API 1.55 from its containerd image store, computed
offline from a namespace's images (``containerd.images.resolve``) and its containers: the
mirror of moby daemon/containerd (image_list.go, image_inspect.go, image_history.go,
image_manifest.go, image_snapshot.go, soft_delete.go, image.go) and of the API router's
version rules (daemon/server/router/image/image_routes.go).

* ``list_rows`` is ``GET /images/json`` (``all``, ``filters``, ``manifests``,
  ``shared-size``), newest first;
* ``inspect`` is ``GET /images/{id}/json`` (``manifests``);
* ``history`` is ``GET /images/{id}/history``;
* ``resolve`` finds an image as the engine does (ID, short ID, ``repo:tag``, ``repo@digest``).

An image is a target digest (``Image.id``: the manifest's, or the index's for a
multi-platform image); its names are familiar strings (``reference.FamiliarString``).
Containers count where the engine counts them: by the platform manifest each runs
(``ContainerRef.manifest``; ``docker_containers`` reads them from a Docker data-root).
The host platform, which decides the best manifest of a multi-platform image, is this
machine's unless ``host`` says otherwise.
"""

from __future__ import annotations

from imagestore.service.docker29_containers import ContainerRef, docker_containers
from imagestore.service.docker29_inspect import history, inspect
from imagestore.service.docker29_list import list_rows
from imagestore.service.docker29_refs import InvalidParameter, Lookup, NoSuchImage, resolve

__all__ = ["ContainerRef", "InvalidParameter", "Lookup", "NoSuchImage", "docker_containers",
           "history", "inspect", "list_rows", "resolve"]
