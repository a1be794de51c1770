"""Docker's own formats and rules, read and written as the engine does: the image root's
layout, content digests, image configs, the imagedb and layerdb folders, the reference store,
and whether a live daemon owns a root. Nothing here knows about the index."""
