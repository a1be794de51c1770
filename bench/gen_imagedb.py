#!/usr/bin/env python3
"""Generate a synthetic Docker (moby) image store tree for benchmarking.

Writes, under ROOT, the on-disk layout the moby daemon uses for the "vfs"
graph driver (only the parts read when the image and layer stores are
restored):

  ROOT/image/vfs/imagedb/content/sha256/<hex>             image config JSON
  ROOT/image/vfs/imagedb/metadata/sha256/<hex>/parent     "sha256:<parent hex>"
  ROOT/image/vfs/layerdb/sha256/<chain hex>/diff          "sha256:<diff id hex>"
  ROOT/image/vfs/layerdb/sha256/<chain hex>/size          decimal byte count
  ROOT/image/vfs/layerdb/sha256/<chain hex>/cache-id      64 random hex chars
  ROOT/image/vfs/layerdb/sha256/<chain hex>/parent        "sha256:<parent chain hex>" (not for the bottom layer)

The image ID is sha256 over the exact config bytes; chain IDs follow the OCI
rule chain(0) = diff(0), chain(n) = sha256("<chain(n-1)> <diff(n)>").
tar-split.json.gz and descriptor.json are NOT written (not read on restore).

Shape (deterministic for a given --seed):
  * ~30% "pulled" root images without a parent file: 1..7 layers, 60% of them
    start with a 1..2-layer base stack drawn from a pool of 50 shared bases.
  * ~70% "built" children with metadata/.../parent: each copies its parent's
    config, adds one history entry and, with p=0.75, one new layer (otherwise an
    empty-layer step such as ENV/LABEL, same rootfs as the parent). The parent
    is the previous image with p=0.6 (long chains) or a uniformly random earlier
    image (branches). Parents need < 10 layers and < 16 history entries.
  * configs are compact JSON, typically 1.5-3 KB; layers per image 1..10.

Usage: gen_imagedb.py ROOT N [--seed 1]
Prints a JSON summary (counts, config size and layer-count stats) and writes
it to ROOT/gen-summary.json.
"""

# Copied into imagestore as its benchmark generator (the store shape the performance
# targets were measured on); unchanged apart from this note.

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import time

MAX_LAYERS = 10
MAX_HISTORY = 16
PARENT_RATIO = 0.70
ADD_LAYER_P = 0.75
CHAIN_P = 0.60
BASE_POOL = 50
BASE_SHARE_P = 0.60

WORDS = ("apt-get update && apt-get install -y --no-install-recommends ca-certificates curl git "
         "build-essential python3 python3-pip libssl-dev zlib1g-dev && rm -rf /var/lib/apt/lists/* "
         "pip install --no-cache-dir -r requirements.txt npm ci --omit=dev go build -o /usr/local/bin/app "
         "./cmd/app useradd -r -u 1001 app chown -R app:app /app mkdir -p /data /var/log/app").split()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class Gen:
    def __init__(self, root: str, seed: int):
        self.rng = random.Random(seed)
        self.seed = seed
        self.base = os.path.join(root, "image", "vfs")
        self.content = os.path.join(self.base, "imagedb", "content", "sha256")
        self.meta = os.path.join(self.base, "imagedb", "metadata", "sha256")
        self.layerdb = os.path.join(self.base, "layerdb", "sha256")
        for d in (self.content, self.meta, self.layerdb, os.path.join(self.base, "layerdb", "mounts"),
                  os.path.join(root, "vfs", "dir")):
            os.makedirs(d, exist_ok=True)
        self.layer_ctr = 0
        self.chains = set()
        self.t = 1_700_000_000

    # ---- layers -------------------------------------------------------
    def new_diff(self) -> str:
        self.layer_ctr += 1
        return "sha256:" + sha(f"layer-{self.seed}-{self.layer_ctr}".encode())

    def ensure_chain(self, diff_ids):
        chain = None
        for d in diff_ids:
            parent = chain
            chain = d if parent is None else "sha256:" + sha(f"{parent} {d}".encode())
            if chain in self.chains:
                continue
            self.chains.add(chain)
            ld = os.path.join(self.layerdb, chain[7:])
            os.makedirs(ld, exist_ok=True)
            write(os.path.join(ld, "diff"), d.encode())
            write(os.path.join(ld, "size"), str(self.rng.randint(0, 300_000_000)).encode())
            write(os.path.join(ld, "cache-id"), ("%064x" % self.rng.getrandbits(256)).encode())
            if parent is not None:
                write(os.path.join(ld, "parent"), parent.encode())

    # ---- configs ------------------------------------------------------
    def ts(self) -> str:
        self.t += self.rng.randint(1, 600)
        return "%s.%09dZ" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.t)),
                             self.rng.randint(0, 999_999_999))

    def cmd(self, lo=3, hi=12) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(lo, hi)))

    def hist(self, empty: bool) -> dict:
        if empty:
            kind = self.rng.choice(("ENV", "LABEL", "WORKDIR", "EXPOSE", "CMD", "USER"))
            h = {"created": self.ts(), "created_by": f"{kind} {self.cmd(1, 4)}",
                 "comment": "buildkit.dockerfile.v0", "empty_layer": True}
        else:
            h = {"created": self.ts(), "created_by": "RUN /bin/sh -c " + self.cmd(),
                 "comment": "buildkit.dockerfile.v0"}
        return h

    def root_config(self, diff_ids, base_hist) -> dict:
        r = self.rng
        hist = list(base_hist)
        for _ in range(len(diff_ids) - len(base_hist)):
            if r.random() < 0.4:
                hist.append(self.hist(True))
            hist.append(self.hist(False))
        env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]
        env += [f"APP_{i}_VERSION={r.randint(0, 40)}.{r.randint(0, 99)}.{r.randint(0, 9)}"
                for i in range(r.randint(1, 6))]
        labels = {f"org.opencontainers.image.{k}": self.cmd(1, 3)
                  for k in r.sample(("title", "vendor", "source", "revision", "version", "licenses",
                                     "description", "url"), r.randint(1, 6))}
        return {
            "architecture": "amd64",
            "config": {"Env": env, "Cmd": ["/bin/sh", "-c", self.cmd(2, 6)], "WorkingDir": "/app",
                       "Labels": labels, "ArgsEscaped": True, "OnBuild": None},
            "created": hist[-1]["created"],
            "history": hist,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        }

    def child_config(self, parent_data: bytes, add_layer: bool) -> dict:
        cfg = json.loads(parent_data)
        h = self.hist(not add_layer)
        cfg["history"].append(h)
        if add_layer:
            cfg["rootfs"]["diff_ids"].append(self.new_diff())
        else:
            cfg["config"]["Env"].append(f"BUILD_STEP_{len(cfg['history'])}={self.rng.getrandbits(32):08x}")
        cfg["created"] = h["created"]
        return cfg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root")
    ap.add_argument("n", type=int)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    g = Gen(a.root, a.seed)
    r = g.rng

    bases = []  # (diff_ids, history)
    for _ in range(BASE_POOL):
        k = r.randint(1, 2)
        bases.append(([g.new_diff() for _ in range(k)],
                      [{"created": g.ts(), "created_by": f"/bin/sh -c #(nop) ADD file:{sha(os.urandom(8))} in / "}
                       for _ in range(k)]))

    images = []  # (id_hex, config bytes, nlayers, nhist)
    sizes, nlayers, with_parent = [], [], 0
    for i in range(a.n):
        parent = None
        if images and r.random() < PARENT_RATIO:
            for attempt in range(5):
                cand = images[-1] if (attempt == 0 and r.random() < CHAIN_P) else images[r.randrange(len(images))]
                if cand[3] < MAX_HISTORY:
                    parent = cand
                    break
        if parent is not None:
            add = parent[2] < MAX_LAYERS and r.random() < ADD_LAYER_P
            cfg = g.child_config(parent[1], add)
        else:
            total = r.randint(1, 7)
            if r.random() < BASE_SHARE_P:
                bd, bh = r.choice(bases)
                bd, bh = bd[:total], bh[:total]
            else:
                bd, bh = [], []
            diff_ids = bd + [g.new_diff() for _ in range(total - len(bd))]
            cfg = g.root_config(diff_ids, bh)
        data = json.dumps(cfg, separators=(",", ":")).encode()
        h = sha(data)
        write(os.path.join(g.content, h), data)
        g.ensure_chain(cfg["rootfs"]["diff_ids"])
        if parent is not None:
            md = os.path.join(g.meta, h)
            os.makedirs(md, exist_ok=True)
            write(os.path.join(md, "parent"), ("sha256:" + parent[0]).encode())
            with_parent += 1
        nl = len(cfg["rootfs"]["diff_ids"])
        images.append((h, data, nl, len(cfg["history"])))
        sizes.append(len(data))
        nlayers.append(nl)

    q = statistics.quantiles(sizes, n=20) if len(sizes) > 1 else sizes * 19
    summary = {
        "images": a.n, "seed": a.seed, "with_parent": with_parent,
        "parent_ratio": round(with_parent / max(a.n, 1), 3),
        "layers_distinct_chain_ids": len(g.chains),
        "config_bytes": {"mean": round(statistics.mean(sizes)), "min": min(sizes), "p5": round(q[0]),
                         "median": round(statistics.median(sizes)), "p95": round(q[-1]), "max": max(sizes)},
        "layers_per_image": {"mean": round(statistics.mean(nlayers), 2), "min": min(nlayers), "max": max(nlayers)},
    }
    with open(os.path.join(a.root, "gen-summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    json.dump(summary, sys.stdout)
    print()


if __name__ == "__main__":
    main()
