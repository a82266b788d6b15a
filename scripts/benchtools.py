"""What the mount benchmark scripts share (imported by scripts/ab-mount,
scripts/bench-bigdir, scripts/bench-churn and scripts/bench-mount, which
scripts/bench-scaling loads; not a script itself).

- `ensure(*pairs)`: installs the Debian packages whose program is missing,
  so a fresh machine runs a benchmark without steps done by hand.
- `throwaway(prefix, dir)`: a scratch directory that, on leaving, lazily
  unmounts every FUSE mount still under it, then removes it. Removing a
  tree that still holds a live mount would walk into it (and its
  `.snapshots/`, every snapshot of it) instead of failing.
"""
import contextlib, os, shutil, subprocess, tempfile, time


def ensure(*pairs):
    """`pairs` of (Debian package, program it installs). Every install
    asks for fuse3 too: alone, a package that needs a FUSE (gocryptfs,
    bindfs) may pull in Debian's `fuse` 2, which removes fuse3 and with it
    the `fusermount3` that sovseal's mounts and tests need."""
    need = [pkg for pkg, prog in pairs if not shutil.which(prog)]
    if need:
        subprocess.run(["apt-get", "install", "-y", "-q", *dict.fromkeys(need + ["fuse3"])], check=True,
                       stdout=subprocess.DEVNULL)


def mounts_under(root):
    """Mount points below `root` (from /proc/self/mounts), deepest first."""
    root = os.path.realpath(root) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].encode().decode("unicode_escape") for line in f]
    return sorted((p for p in points if p.startswith(root)), key=len, reverse=True)


@contextlib.contextmanager
def throwaway(prefix, dir):
    ensure(("fuse3", "fusermount3"))
    root = tempfile.mkdtemp(prefix=prefix, dir=dir)
    try:
        yield root
    finally:
        for m in mounts_under(root):
            subprocess.run(["fusermount3", "-uz", m], stderr=subprocess.DEVNULL)
        # A daemon whose mount was detached lazily finishes its last
        # commit in the data dir meanwhile: try again for a few seconds.
        for _ in range(50):
            shutil.rmtree(root, ignore_errors=True)
            if not os.path.exists(root):
                break
            time.sleep(0.2)
