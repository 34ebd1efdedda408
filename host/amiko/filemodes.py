"""Secrets at rest: folders the project writes are their owner's only (0700, files 0600).

A node's HOME holds its key, the keys of a provider's wallets (node.db and its -wal), who paid
whom (node.log); a virtual board's HOME/flash holds the wallet's key (data/config.a). Every
command that writes into such a folder calls private_umask() first, and make_private(folder)
fixes what someone else created with looser modes (a folder made 0755 with mkdir, a file
copied in 0644); the caller reports each fix, one line per path (describe_fix).
"""

import os
import stat

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_umask():
    """Files and folders created from now on by this process are its owner's only (umask 077)."""
    return os.umask(0o077)


def make_private(path):
    """chmod path to 0700 and every entry below it to 0600 (files, sockets) or 0700 (folders).

    Symlinks are left alone (never followed: they may point out of the folder). A missing path
    is no error. Returns [(path, old_mode, new_mode)] for each entry whose mode was changed."""
    fixed = []

    def fix(p, st, want):
        mode = stat.S_IMODE(st.st_mode)
        if mode != want:
            os.chmod(p, want)
            fixed.append((p, mode, want))

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return fixed
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError("%s is not a directory" % path)
    fix(path, st, PRIVATE_DIR)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            try:
                st = os.lstat(p)
            except FileNotFoundError:  # gone meanwhile (the -shm file of a database being closed)
                continue
            if stat.S_ISLNK(st.st_mode):
                continue
            try:
                fix(p, st, PRIVATE_DIR if stat.S_ISDIR(st.st_mode) else PRIVATE_FILE)
            except FileNotFoundError:
                continue
    return fixed


def describe_fix(fix):
    """One log line for one entry of make_private's answer."""
    return "fixed mode of %s: %04o -> %04o" % fix
