#!/usr/bin/env python3
"""Writes a tarball that stands in for gcr.io/distroless/cc-debian12:nonroot.

Takes the files of a few Debian packages out of an unpacked bookworm root (the
same packages distroless/cc ships: glibc, libgcc, libgomp, libstdc++, libssl,
CA certificates, tzdata, netbase, base-files), adds the users distroless has
(root, nobody, nonroot = 65532) and nothing else: no shell, no package manager.

usage: distroless.py ROOT OUT.tar PACKAGE...
"""
import io
import os
import sys
import tarfile


def canonical(root, path):
    """`path` inside `root` with its parent directories' symlinks resolved
    (inside the root), the last component left as it is."""
    parts = [p for p in path.strip("/").split("/") if p]
    resolved = []
    for i, part in enumerate(parts):
        resolved.append(part)
        if i == len(parts) - 1:
            break
        for _ in range(40):
            full = os.path.join(root, *resolved)
            if not os.path.islink(full):
                break
            target = os.readlink(full)
            if target.startswith("/"):
                resolved = [p for p in target.split("/") if p]
            else:
                resolved = os.path.normpath(
                    os.path.join(*resolved[:-1], target) if len(resolved) > 1 else target
                ).split("/")
    return "/".join(resolved)


def package_files(root, package):
    info = os.path.join(root, "var/lib/dpkg/info")
    for name in (f"{package}.list", f"{package}:amd64.list"):
        path = os.path.join(info, name)
        if os.path.exists(path):
            with open(path) as f:
                return [line.rstrip("\n") for line in f if line.strip() not in ("", "/.")]
    raise SystemExit(f"package {package} is not installed in {root}")


def main():
    root, out, packages = sys.argv[1], sys.argv[2], sys.argv[3:]
    wanted = set()
    for package in packages:
        for path in package_files(root, package):
            rel = canonical(root, path)
            if os.path.lexists(os.path.join(root, rel)):
                wanted.add(rel)
    # update-ca-certificates writes the bundle; no package lists it.
    for dirpath, _dirs, files in os.walk(os.path.join(root, "etc/ssl/certs")):
        for name in files:
            wanted.add(os.path.relpath(os.path.join(dirpath, name), root))
    # Parents of everything, so the tree is complete.
    for rel in list(wanted):
        parent = os.path.dirname(rel)
        while parent:
            wanted.add(parent)
            parent = os.path.dirname(parent)
    skip = ("usr/share/doc/", "usr/share/man/", "usr/share/lintian/", "usr/share/info/")
    wanted = {w for w in wanted if not w.startswith(skip)}
    # Generated at install time; distroless ships an empty passwd of its own.
    for generated in ("etc/passwd", "etc/group", "etc/shadow"):
        wanted.discard(generated)

    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        # Merged /usr: the same top-level links as Debian (and the ELF
        # interpreter path /lib64/ld-linux-x86-64.so.2).
        for link in ("bin", "lib", "lib64", "sbin"):
            tar.add(os.path.join(root, link), arcname=link, recursive=False)
        explicit = {"bin", "lib", "lib64", "sbin", "etc/passwd", "etc/group",
                    "root", "home", "home/nonroot", "tmp", "var", "var/tmp"}
        for rel in sorted(wanted):
            if rel in explicit:
                continue
            tar.add(os.path.join(root, rel), arcname=rel, recursive=False)

        def add_file(name, text, mode=0o644):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), mode, 0, 0
            tar.addfile(info, io.BytesIO(data))

        def add_dir(name, mode, uid=0, gid=0):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, mode, uid, gid
            tar.addfile(info)

        add_file("etc/passwd",
                 "root:x:0:0:root:/root:/sbin/nologin\n"
                 "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
                 "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
        add_file("etc/group", "root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n")
        add_dir("root", 0o700)
        add_dir("home", 0o755)
        add_dir("home/nonroot", 0o700, 65532, 65532)
        add_dir("tmp", 0o1777)
        add_dir("var", 0o755)
        add_dir("var/tmp", 0o1777)


if __name__ == "__main__":
    main()
