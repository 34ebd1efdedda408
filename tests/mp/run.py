"""Entry point: micropython tests/mp/run.py [--vectors DIR] MODULE ..."""

import sys

import mptest


def main(argv):
    names = []
    i = 0
    while i < len(argv):
        if argv[i] == "--vectors":
            mptest.VECTORS_DIR = argv[i + 1]
            i += 2
            continue
        names.append(argv[i])
        i += 1
    if not names:
        print("usage: run.py [--vectors DIR] MODULE ...")
        sys.exit(2)
    sys.exit(1 if mptest.run(names) else 0)


main(sys.argv[1:])
