"""The control methods a real shop node serves: the table every fake node in the bridge tests
is checked against, so a fake cannot offer a method the node does not have (as `cancel_request`
was) and a bridge call to such a method fails the test."""

import asyncio
import concurrent.futures
import functools
import shutil
import tempfile
from pathlib import Path

from amiko_testing.network import free_port, run_amiko


@functools.lru_cache(maxsize=1)
def real_node_methods():
    """Names in a started node's control table (amiko.node.daemon.Node.control.methods),
    from a real node started in-process on a fresh home (developer mode off)."""
    from amiko.node import daemon
    from amiko.node.home import Home

    tmp = Path(tempfile.mkdtemp(prefix="amiko-methods-"))
    try:
        home_dir = tmp / "shop"
        r = run_amiko(["init", "--home", home_dir, "--json", "--listen", "127.0.0.1:%d" % free_port(),
                       "--name", "shop", "--meeting-point", "mp-shop"])
        assert r.returncode == 0, r
        home = Home(str(home_dir))
        config = home.load_config()
        identity = daemon._modules()[1].Identity.load(home.key_path)

        async def main():
            node = daemon.Node(home, config, identity)
            try:
                await node.start()
                return frozenset(node.control.methods)
            finally:
                await node.stop()

        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a loop of its own (Playwright may hold this one)
            return pool.submit(asyncio.run, main()).result(60)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
